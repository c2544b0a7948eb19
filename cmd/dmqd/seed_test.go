package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// seedView is what the stand-in seed storage service shows at GET /view.
type seedView struct {
	Version int64 `json:"version"`
	Brokers map[string]struct {
		Host  string `json:"host"`
		Port  int32  `json:"port"`
		Alive bool   `json:"alive"`
	} `json:"brokers"`
	Partitions map[string]struct {
		LeaderID    int32   `json:"leaderId"`
		FollowerIDs []int32 `json:"followerIds"`
		ISRIDs      []int32 `json:"isrIds"`
		LeaderEpoch int64   `json:"leaderEpoch"`
	} `json:"partitions"`
	ControllerID int32          `json:"controllerId"`
	Types        map[string]int `json:"types"`
	Heartbeats   int            `json:"heartbeats"`
}

// describe renders a view and a state in one comparable form: the alive
// brokers with their endpoints, and every partition's leader, followers,
// ISR and leader epoch.
func describeSeedView(v seedView) string {
	var lines []string
	for id, b := range v.Brokers {
		if b.Alive {
			lines = append(lines, fmt.Sprintf("broker %s %s:%d", id, b.Host, b.Port))
		}
	}
	for key, p := range v.Partitions {
		lines = append(lines, fmt.Sprintf("%s leader=%d followers=%v isr=%v epoch=%d", key, p.LeaderID, p.FollowerIDs, p.ISRIDs, p.LeaderEpoch))
	}
	slices.Sort(lines)
	return fmt.Sprintf("version %d\n%s", v.Version, strings.Join(lines, "\n"))
}

func describeState(state *metadatav1.ClusterState) string {
	var lines []string
	for _, b := range state.GetBrokers() {
		if !b.GetFenced() {
			lines = append(lines, fmt.Sprintf("broker %d %s:%d", b.GetId(), b.GetHost(), b.GetPort()))
		}
	}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			followers := []int32{}
			for _, r := range p.GetReplicas() {
				if r != p.GetLeader() {
					followers = append(followers, r)
				}
			}
			lines = append(lines, fmt.Sprintf("%s-%d leader=%d followers=%v isr=%v epoch=%d", p.GetTopic(), p.GetPartition(),
				p.GetLeader(), followers, p.GetIsr(), p.GetLeaderEpoch()))
		}
	}
	slices.Sort(lines)
	return fmt.Sprintf("version %d\n%s", state.GetMetadataVersion(), strings.Join(lines, "\n"))
}

// TestSeedStorageServicesWorkUnchanged runs storage services of the Java
// system (a stand-in written from its contract: REST, its JSON names)
// against three real controllers configured as its README says: they find
// the controller, register, heartbeat without a body, and hold what the
// controllers hold, through topic creates and deletes (one deleting a
// prefix of another's name), a storage service killed (fenced) and back,
// and the leader killed with SIGKILL.
func TestSeedStorageServicesWorkUnchanged(t *testing.T) {
	bin := dmqdBinary(t)
	dir := t.TempDir()
	standIn := filepath.Join(dir, "seedstorage")
	build := exec.Command("go", "build", "-o", standIn, "./testdata/seedstorage")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	controllers := []int{freePort(t), freePort(t), freePort(t)}
	storages := []int{freePort(t), freePort(t)}
	var metadata, storage, urls []string
	for i, port := range controllers {
		metadata = append(metadata, fmt.Sprintf(`{"id": %d, "host": "127.0.0.1", "port": %d, "url": "http://127.0.0.1:%d"}`, i+1, port, port))
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	for i, port := range storages {
		storage = append(storage, fmt.Sprintf(`{"id": %d, "host": "127.0.0.1", "port": %d, "url": "http://127.0.0.1:%d", "protocol": "seed-rest"}`,
			i+1, port, port))
	}
	// The seed's own keys beside the services are accepted as they are.
	services := fmt.Sprintf(`{"services": {"metadata-services": [%s], "storage-services": [%s]},
		"controller": {"electionTimeoutMs": 5000}, "jwt": {"secret": "x", "algorithm": "HS256"}}`,
		strings.Join(metadata, ","), strings.Join(storage, ","))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "services.json"), []byte(services), 0o644))

	procs := map[int]*exec.Cmd{}
	start := func(id int) {
		cmd := exec.Command(bin, "--id", fmt.Sprint(id), "--server.host", "127.0.0.1",
			"--services.config-path", filepath.Join(dir, "services.json"),
			"--metadata.data-dir", filepath.Join(dir, fmt.Sprintf("node-%d", id)), "--metadata.initial-cluster-state", "new",
			"--server.cluster-view", "seed", "--services.heartbeat-timeout-ms", "3000",
			"--raft.election-timeout-ms", "500", "--raft.heartbeat-interval-ms", "50", "--log.level", "warn")
		startLogged(t, fmt.Sprintf("controller %d", id), cmd)
		procs[id] = cmd
	}
	standIns := map[int]*exec.Cmd{}
	startStandIn := func(id int) {
		cmd := exec.Command(standIn, "--id", fmt.Sprint(id), "--listen", fmt.Sprintf("127.0.0.1:%d", storages[id-1]),
			"--metadata", strings.Join(urls, ","), "--heartbeat-interval", "200ms")
		startLogged(t, fmt.Sprintf("seed storage service %d", id), cmd)
		standIns[id] = cmd
	}
	for id := 1; id <= 3; id++ {
		start(id)
	}
	for id := 1; id <= 2; id++ {
		startStandIn(id)
	}

	c, err := client.New(client.Config{Endpoints: urls})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	view := func(id int) (seedView, error) {
		var v seedView
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/view", storages[id-1]))
		if err != nil {
			return v, err
		}
		defer resp.Body.Close()
		return v, json.NewDecoder(resp.Body).Decode(&v)
	}
	// inSync: every running stand-in holds what the controllers hold.
	inSync := func(what string, running ...int) {
		var last string
		require.Eventually(t, func() bool {
			resp, err := c.GetClusterMetadata(ctx, &metadatav1.GetClusterMetadataRequest{})
			if err != nil {
				last = err.Error()
				return false
			}
			want := describeState(resp.GetState())
			for _, id := range running {
				v, err := view(id)
				if err != nil {
					last = err.Error()
					return false
				}
				if got := describeSeedView(v); got != want {
					last = fmt.Sprintf("storage service %d holds\n%s\nthe controllers\n%s", id, got, want)
					return false
				}
				if v.ControllerID != int32(resp.GetLeaderId()) {
					last = fmt.Sprintf("storage service %d was told of controller %d, the leader is %d", id, v.ControllerID, resp.GetLeaderId())
					return false
				}
			}
			return true
		}, 30*time.Second, 100*time.Millisecond, "%s: %s", what, last)
	}

	require.Eventually(t, func() bool {
		resp, err := c.ListBrokers(ctx, &metadatav1.ListBrokersRequest{})
		return err == nil && len(resp.GetBrokers()) == 2 && !resp.GetBrokers()[0].GetFenced() && !resp.GetBrokers()[1].GetFenced()
	}, e2eStartBound, 100*time.Millisecond, "the seed's storage services register and heartbeat")
	for _, topic := range []struct {
		name       string
		partitions int32
		rf         int32
	}{{"orders", 3, 2}, {"orders-eu", 2, 2}, {"audit", 1, 1}} {
		_, err := c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: topic.name, Partitions: topic.partitions, ReplicationFactor: topic.rf})
		require.NoError(t, err)
	}
	inSync("topics created", 1, 2)
	_, err = c.DeleteTopic(ctx, &metadatav1.DeleteTopicRequest{Name: "orders"})
	require.NoError(t, err)
	inSync("a topic whose name begins another's deleted (as a full snapshot)", 1, 2)
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "scratch", Partitions: 1, ReplicationFactor: 1})
	require.NoError(t, err)
	_, err = c.DeleteTopic(ctx, &metadatav1.DeleteTopicRequest{Name: "scratch"})
	require.NoError(t, err)
	inSync("a topic deleted", 1, 2)

	// A storage service killed is fenced; the other sees it and the moved
	// leaderships; back, it registers again and catches up.
	require.NoError(t, standIns[2].Process.Signal(syscall.SIGKILL))
	_ = standIns[2].Wait()
	require.Eventually(t, func() bool {
		resp, err := c.DescribeBroker(ctx, &metadatav1.DescribeBrokerRequest{Id: 2})
		return err == nil && resp.GetBroker().GetFenced()
	}, 20*time.Second, 100*time.Millisecond, "a silent storage service is fenced")
	inSync("a storage service fenced", 1)
	startStandIn(2)
	require.Eventually(t, func() bool {
		resp, err := c.DescribeBroker(ctx, &metadatav1.DescribeBrokerRequest{Id: 2})
		return err == nil && !resp.GetBroker().GetFenced()
	}, 20*time.Second, 100*time.Millisecond, "a storage service back is unfenced once pushes caught it up")
	inSync("a storage service back", 1, 2)

	// The leader killed: a new one tells the storage services, which
	// follow it, and keep up.
	quorum, err := c.DescribeQuorumFromLeader(ctx)
	require.NoError(t, err)
	leader := int(quorum.GetLeaderId())
	require.NoError(t, procs[leader].Process.Signal(syscall.SIGKILL))
	_ = procs[leader].Wait()
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "after-failover", Partitions: 2, ReplicationFactor: 2})
	require.NoError(t, err)
	inSync("after the leader's SIGKILL", 1, 2)
	for id := 1; id <= 2; id++ {
		v, err := view(id)
		require.NoError(t, err)
		assert.Positive(t, v.Types["CONTROLLER_CHANGED"], "storage service %d", id)
		// Its heartbeats follow the new leader (from CONTROLLER_CHANGED,
		// or its own discovery after three failures).
		require.Eventually(t, func() bool {
			now, err := view(id)
			return err == nil && now.Heartbeats > v.Heartbeats
		}, 20*time.Second, 100*time.Millisecond, "storage service %d heartbeats the new leader", id)
	}
	v, err := view(1)
	require.NoError(t, err)
	assert.Positive(t, v.Types["TOPIC_CREATED"], "typed updates, not a full snapshot per change: %v", v.Types)
	assert.Positive(t, v.Types["TOPIC_DELETED"], "%v", v.Types)
	assert.Positive(t, v.Types["LEADER_UPDATE"], "%v", v.Types)
}
