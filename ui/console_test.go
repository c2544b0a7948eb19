package ui_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/ui"
	"github.com/stretchr/testify/require"
)

// screenshots, when set, is where the views are saved at 1440×900
// (make screenshots: docs/).
var screenshots = flag.String("ui.screenshots", "", "save the console's main views as PNG files in this directory")

const (
	adminToken  = "console-admin-token-0123456789"
	readerToken = "console-reader-token-0123456789"
	// updateWithin is how soon a change committed through the API must
	// show on the page.
	updateWithin = time.Second
)

// browser finds Chromium. Without it the tests skip, loudly; with
// DMQ_REQUIRE_CHROMIUM=1 (make test-ui, CI) they fail.
func browser(t *testing.T) string {
	for _, name := range []string{os.Getenv("DMQ_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("DMQ_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("Chromium is required (DMQ_REQUIRE_CHROMIUM=1) but not installed: apt-get install chromium")
	}
	fmt.Fprintln(os.Stderr, "\n*** SKIPPING the web console's browser tests: Chromium is not installed (apt-get install chromium; make test-ui fails without it) ***")
	t.Skip("Chromium is not installed")
	return ""
}

// controller is a real dmqd with authentication on (an admin and a
// reader token) and a short broker session.
type controller struct {
	url    string
	client metadatav1connect.MetadataServiceClient
	admin  metadatav1connect.MetadataServiceClient
}

func startController(t *testing.T) *controller {
	dir := t.TempDir()
	bin := filepath.Join(dir, "dmqd")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/dmqd").CombinedOutput()
	require.NoError(t, err, "%s", out)
	tokens, err := json.Marshal(map[string]any{"tokens": []map[string]string{
		{"token": adminToken, "name": "console-admin", "role": "ADMIN"},
		{"token": readerToken, "name": "console-reader", "role": "CONSUMER"},
	}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens.json"), tokens, 0o600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	cmd := exec.Command(bin, "--server.host", "127.0.0.1", "--server.port", fmt.Sprint(port),
		"--metadata.data-dir", filepath.Join(dir, "data"), "--services.config-path", "none",
		"--security.tokens-file", filepath.Join(dir, "tokens.json"), "--services.heartbeat-timeout-ms", "1500",
		"--replication.default-replication-factor", "2")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dmqd's log:\n%s", logs.String())
		}
	})
	c := &controller{url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	require.Eventually(t, func() bool {
		resp, err := http.Get(c.url + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "dmqd never became ready")
	withToken := func(token string) connect.ClientOption {
		return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+token)
				return next(ctx, req)
			}
		}))
	}
	c.admin = metadatav1connect.NewMetadataServiceClient(http.DefaultClient, c.url, withToken(adminToken))
	c.client = c.admin
	return c
}

// heartbeats keeps brokers alive until stopped, each on its own.
type heartbeats struct {
	mu      sync.Mutex
	stopped map[int32]bool
	done    chan struct{}
}

func (c *controller) keepAlive(t *testing.T, ids ...int32) *heartbeats {
	h := &heartbeats{stopped: map[int32]bool{}, done: make(chan struct{})}
	epochs, held := map[int32]int64{}, map[int32]int64{}
	for _, id := range ids {
		resp, err := c.admin.RegisterBroker(context.Background(), connect.NewRequest(&metadatav1.RegisterBrokerRequest{
			Id: id, Host: fmt.Sprintf("storage-%d.example", id), Port: 9092, Rack: fmt.Sprintf("rack-%d", id%2), IncarnationId: "console-test"}))
		require.NoError(t, err)
		epochs[id] = resp.Msg.GetBroker().GetBrokerEpoch()
	}
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.done:
				return
			case <-tick.C:
			}
			for _, id := range ids {
				h.mu.Lock()
				stopped := h.stopped[id]
				h.mu.Unlock()
				if !stopped {
					// It reports what the last answer said: a service that
					// keeps up.
					resp, err := c.admin.StorageHeartbeat(context.Background(), connect.NewRequest(&metadatav1.StorageHeartbeatRequest{
						ServiceId: fmt.Sprint(id), BrokerEpoch: epochs[id], MetadataVersion: held[id]}))
					if err == nil {
						held[id] = resp.Msg.GetMetadataVersion()
					}
				}
			}
		}
	}()
	t.Cleanup(func() { close(h.done) })
	return h
}

func (h *heartbeats) stop(id int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped[id] = true
}

func (c *controller) createTopic(t *testing.T, name string, partitions int32) {
	_, err := c.admin.CreateTopic(context.Background(), connect.NewRequest(&metadatav1.CreateTopicRequest{Name: name, Partitions: partitions}))
	require.NoError(t, err)
}

// fenced says whether the controller has fenced the broker (false when
// it cannot tell: it runs in require.Eventually's goroutine).
func (c *controller) fenced(id int32) bool {
	resp, err := c.admin.DescribeBroker(context.Background(), connect.NewRequest(&metadatav1.DescribeBrokerRequest{Id: id}))
	return err == nil && resp.Msg.GetBroker().GetFenced()
}

// page is the console in a headless Chromium at 1440×900.
func page(t *testing.T, exec string) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exec), chromedp.WindowSize(1440, 900),
		chromedp.NoSandbox, chromedp.Flag("disable-gpu", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first run starts the browser, with no deadline (a deadline on it
	// would stop the browser); every later step has one (run).
	require.NoError(t, chromedp.Do(ctx))
	return ctx
}

// stepTimeout bounds each step, so that a page that never shows something
// fails the test rather than hanging it.
const stepTimeout = 30 * time.Second

// textWithin waits until the element's text contains want, at most
// within; it fails with the text seen last.
func textWithin(t *testing.T, ctx context.Context, selector, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var text string
	for {
		text = evaluate[string](t, ctx, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, selector))
		if strings.Contains(text, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s did not show %q within %v; it shows: %q", selector, want, within, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

func evaluate[T any](t *testing.T, ctx context.Context, expression string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	require.NoError(t, err)
	return v
}

// textGone waits until the element's text no longer contains gone.
func textGone(t *testing.T, ctx context.Context, selector, gone string, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		text := evaluate[string](t, ctx, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, selector))
		if !strings.Contains(text, gone) {
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s still shows %q after %v: %q", selector, gone, within, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func useToken(t *testing.T, ctx context.Context, token string) {
	t.Helper()
	if !evaluate[bool](t, ctx, `document.getElementById("token-dialog").open`) {
		run(t, ctx, chromedp.Click(chromedp.CSS("#token-button")))
	}
	run(t, ctx, chromedp.WaitVisible(chromedp.CSS("#token-input")),
		chromedp.SetValue(chromedp.CSS("#token-input"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[value="use"]`)),
		chromedp.WaitNotVisible(chromedp.CSS("#token-dialog")))
}

func save(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if *screenshots == "" {
		return
	}
	run(t, ctx, chromedp.Sleep(300*time.Millisecond))
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(*screenshots, name), png, 0o644))
}

// The console against a real dmqd: it asks for a token, shows what the
// API created, follows changes within a second, and its admin actions
// work with an admin token and are refused otherwise, with the server's
// message.
func TestConsole(t *testing.T) {
	chromium := browser(t)
	c := startController(t)
	beats := c.keepAlive(t, 1, 2, 3)
	for _, name := range []string{"orders", "payments", "audit-log"} {
		c.createTopic(t, name, 4)
	}
	ctx := page(t, chromium)

	// Authentication is on: the page asks for a token and shows why.
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/overview"))
	textWithin(t, ctx, "#conn", "a token is needed", 10*time.Second)
	require.True(t, evaluate[bool](t, ctx, `document.getElementById("token-dialog").open`), "the page asks for a token")

	// With a reader's token: what the API created.
	useToken(t, ctx, readerToken)
	textWithin(t, ctx, "#conn", "live", 5*time.Second)
	textWithin(t, ctx, "#controllers", "voter · leader", 5*time.Second)
	textWithin(t, ctx, "#summary", "3 (3 live, 0 fenced)", 5*time.Second)
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/topics"))
	textWithin(t, ctx, "#topics", "audit-log", 5*time.Second)
	textWithin(t, ctx, "#topics", "payments", time.Second)
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/brokers"))
	textWithin(t, ctx, "#brokers", "storage-3.example:9092", 5*time.Second)

	// Live: a topic created through the API shows within a second.
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/topics"))
	textWithin(t, ctx, "#topics", "orders", 5*time.Second)
	c.createTopic(t, "inventory", 2)
	took := textWithin(t, ctx, "#topics", "inventory", updateWithin)
	t.Logf("a created topic showed after %v", took)

	// Live: a broker that stops its heartbeats is fenced; the page shows it
	// within a second of the fence.
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/brokers"))
	textWithin(t, ctx, "#brokers", "storage-3.example", 5*time.Second)
	beats.stop(3)
	require.Eventually(t, func() bool { return c.fenced(3) }, 10*time.Second, 50*time.Millisecond, "broker 3 was never fenced")
	took = textWithin(t, ctx, `#brokers tr[data-key="3"]`, "fenced", updateWithin)
	t.Logf("a fenced broker showed after %v", took)

	// An admin action with a reader's token: refused, with the server's
	// message.
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/topics"),
		chromedp.SetValue(chromedp.CSS("#new-name"), "refused-topic"),
		chromedp.Click(chromedp.CSS(`#create-topic button[type="submit"]`)))
	textWithin(t, ctx, "#notice", "permission_denied", 5*time.Second)
	textWithin(t, ctx, "#notice", "may not call CreateTopic", time.Second)

	// With an admin's token: it works.
	useToken(t, ctx, adminToken)
	run(t, ctx, chromedp.SetValue(chromedp.CSS("#new-name"), "console-made"),
		chromedp.Click(chromedp.CSS(`#create-topic button[type="submit"]`)))
	textWithin(t, ctx, "#notice", "Creating topic console-made: done", 5*time.Second)
	textWithin(t, ctx, "#topics", "console-made", updateWithin)
	_, err := c.admin.DescribeTopic(context.Background(), connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: "console-made"}))
	require.NoError(t, err, "the topic the page created exists")

	// Delete, after a confirmation.
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/topics/console-made"))
	textWithin(t, ctx, "#h-detail", "Topic console-made", 5*time.Second)
	run(t, ctx, chromedp.Click(chromedp.CSS("#delete-topic")), chromedp.WaitVisible(chromedp.CSS("#confirm-dialog")))
	textWithin(t, ctx, "#confirm-text", "Delete topic console-made", time.Second)
	run(t, ctx, chromedp.Click(chromedp.CSS("#confirm-yes")))
	textWithin(t, ctx, "#notice", "Deleting topic console-made: done", 5*time.Second)
	_, err = c.admin.DescribeTopic(context.Background(), connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: "console-made"}))
	require.Error(t, err, "the page deleted the topic")
	textGone(t, ctx, "#topics", "console-made", updateWithin)

	// Without a token: the page asks for one again; cancelled, an action
	// is refused as unauthenticated.
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/overview"),
		chromedp.Click(chromedp.CSS("#token-button")), chromedp.WaitVisible(chromedp.CSS("#token-input")),
		chromedp.Click(chromedp.CSS(`#token-form button[value="forget"]`)))
	textWithin(t, ctx, "#conn", "a token is needed", 5*time.Second)
	run(t, ctx, chromedp.WaitVisible(chromedp.CSS("#token-input")),
		chromedp.Click(chromedp.CSS(`#token-form button[value="cancel"]`)), chromedp.WaitNotVisible(chromedp.CSS("#token-dialog")),
		chromedp.Click(chromedp.CSS("#elect-all")))
	textWithin(t, ctx, "#notice", "unauthenticated", 5*time.Second)

	// Nothing the page did was blocked by its Content-Security-Policy, and
	// it kept nothing in the browser's storage.
	require.Zero(t, evaluate[int](t, ctx, "window.consoleViolations"), "CSP violations")
	require.Equal(t, "0 0 ", evaluate[string](t, ctx, "`${localStorage.length} ${sessionStorage.length} ${document.cookie}`"), "storage")
}

// The main views at 1440×900 for the README (make screenshots), on a
// cluster with some history: brokers, topics, a fenced broker, a move.
func TestConsoleScreenshots(t *testing.T) {
	if *screenshots == "" {
		t.Skip("-ui.screenshots not set (make screenshots sets it)")
	}
	chromium := browser(t)
	c := startController(t)
	beats := c.keepAlive(t, 1, 2, 3, 4)
	for i, name := range []string{"orders", "payments", "audit-log", "inventory", "clicks", "users"} {
		c.createTopic(t, name, int32(3+i))
	}
	beats.stop(4)
	require.Eventually(t, func() bool { return c.fenced(4) }, 10*time.Second, 50*time.Millisecond)
	// Two moves that wait: each to a live broker the partition is not on
	// (no storage service here reports it caught up).
	var moves []*metadatav1.PartitionReassignment
	for _, name := range []string{"orders", "clicks"} {
		resp, err := c.admin.DescribeTopic(context.Background(), connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: name}))
		require.NoError(t, err)
		replicas := resp.Msg.GetTopic().GetPartitions()[0].GetReplicas()
		for _, id := range []int32{1, 2, 3} {
			if !slices.Contains(replicas, id) {
				moves = append(moves, &metadatav1.PartitionReassignment{Topic: name, Replicas: []int32{id, replicas[0]}})
				break
			}
		}
	}
	_, err := c.admin.AlterPartitionReassignments(context.Background(), connect.NewRequest(&metadatav1.AlterPartitionReassignmentsRequest{Reassignments: moves}))
	require.NoError(t, err)
	ctx := page(t, chromium)
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/overview"))
	useToken(t, ctx, adminToken)
	textWithin(t, ctx, "#summary", "4 (3 live, 1 fenced)", 5*time.Second)
	save(t, ctx, "console-overview.png")
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/brokers"))
	textWithin(t, ctx, "#brokers", "ago", 5*time.Second)
	save(t, ctx, "console-brokers.png")
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/topics/orders"))
	textWithin(t, ctx, "#h-detail", "Topic orders", 5*time.Second)
	save(t, ctx, "console-topic.png")
	run(t, ctx, chromedp.Navigate(c.url+"/ui/#/balancing"))
	textWithin(t, ctx, "#moves", "orders-0", 5*time.Second)
	textWithin(t, ctx, "#moves", "clicks-0", time.Second)
	save(t, ctx, "console-balancing.png")
}

// The console's modules in the browser: Connect's stream framing whatever
// the chunks (one byte at a time, several messages in one, a large one,
// an error at the end, a stream cut short) and the delta rules (a topic
// deleted and created again, an unknown topic's partition, a delta out of
// order, an older full state). testdata/modules.js lists what failed.
func TestConsoleModules(t *testing.T) {
	chromium := browser(t)
	mux := http.NewServeMux()
	mux.Handle(ui.Path, ui.Handler())
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	checks, err := os.ReadFile("testdata/modules.js")
	require.NoError(t, err)
	ctx := page(t, chromium)
	run(t, ctx, chromedp.Navigate(server.URL+"/ui/"))
	ctx2, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	failures, err := chromedp.Run(ctx2, chromedp.Evaluate[[]string](string(checks), chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	require.Empty(t, failures)
}
