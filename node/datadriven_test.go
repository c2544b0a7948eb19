package node

import (
	cryptorand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/stretchr/testify/require"
)

// TestScenarios runs the readable scenarios of testdata/scenarios, in the
// style of etcd raft's interaction tests: each file is a script of
// commands on a cluster stepped by hand (harness_test.go), each command
// followed by the output it must print. Rewrite the expected output after
// an intended change with: go test ./node -run TestScenarios -rewrite
//
// Commands (ids are controller ids, via= the controller asked):
//
//	cluster size=N            found N controllers
//	elect id=I                I campaigns and becomes the active controller
//	campaign id=I             I campaigns; nothing else moves
//	tick [n=K]                advance every controller K ticks (default 1)
//	wait-leader [ticks=K]     tick until some controller is active
//	status                    one line per controller
//	isolate id=I | heal | cut a=I b=J
//	crash id=I | restart id=I | wipe id=I   (wipe: a lost disk, restarted empty)
//	register-broker via=I broker=B
//	create-topic via=I name=T partitions=P rf=R
//	heartbeat via=I broker=B [version=V]
//	read via=I                a linearizable read of the broker list
//	add-learner via=I id=J | promote via=I id=J | remove-voter via=I id=J
//	brokers via=I             the brokers as I's state machine holds them
//
// Raft draws election timeouts from crypto/rand; the test replaces its
// reader with a seeded stream, so that every run prints the same output.
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, filepath.Join("testdata", "scenarios"), func(t *testing.T, path string) {
		var seed [32]byte
		binary.LittleEndian.PutUint64(seed[:], 0x5ce7a210)
		saved := cryptorand.Reader
		cryptorand.Reader = rand.NewChaCha8(seed)
		defer func() { cryptorand.Reader = saved }()

		var c *cluster
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "cluster" {
				require.NotNil(t, c, "%s: the script must start with cluster", d.Pos)
				c.t = t
			}
			return runScenarioCommand(t, &c, d)
		})
	})
}

func runScenarioCommand(t *testing.T, cp **cluster, d *datadriven.TestData) string {
	c := *cp
	arg := func(key string, fallback int) int {
		if !d.HasArg(key) {
			require.GreaterOrEqual(t, fallback, 0, "%s: %s needs %s=", d.Pos, d.Cmd, key)
			return fallback
		}
		var v int
		d.ScanArgs(t, key, &v)
		return v
	}
	id := func(key string) uint64 { return uint64(arg(key, -1)) }
	via := func() *Node {
		n, ok := c.nodes[id("via")]
		require.True(t, ok, "%s: controller %d is not running", d.Pos, id("via"))
		return n
	}
	switch d.Cmd {
	case "cluster":
		*cp = newCluster(t, arg("size", -1), nil)
		return scenarioStatus(*cp)
	case "elect":
		c.elect(id("id"))
		return scenarioStatus(c)
	case "campaign":
		require.NoError(t, c.nodes[id("id")].Campaign())
		return ""
	case "tick":
		c.tick(arg("n", 1))
		return ""
	case "wait-leader":
		n := c.waitLeader(arg("ticks", 200))
		return fmt.Sprintf("controller %d is active in term %d\n", n.ID(), n.Term())
	case "status":
		return scenarioStatus(c)
	case "isolate":
		c.isolate(id("id"))
		return ""
	case "cut":
		c.partition(id("a"), id("b"))
		return ""
	case "heal":
		c.heal()
		return ""
	case "crash":
		c.crash(id("id"))
		return ""
	case "restart":
		c.restart(id("id"))
		return ""
	case "wipe":
		c.wipe(id("id"))
		return ""
	case "register-broker":
		n := via()
		return scenarioOutcome(c.do(func(done func(Outcome)) { n.RegisterBroker(registerReq(int32(arg("broker", -1))), done) }))
	case "create-topic":
		n := via()
		var name string
		d.ScanArgs(t, "name", &name)
		req := createTopicReq(name, int32(arg("partitions", 1)), int32(arg("rf", 1)))
		return scenarioOutcome(c.do(func(done func(Outcome)) { n.CreateTopic(req, done) }))
	case "heartbeat":
		n := via()
		broker := int32(arg("broker", -1))
		var epoch int64
		if b := n.StateMachine().Broker(broker); b != nil {
			epoch = b.GetBrokerEpoch()
		}
		resp, err := n.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: fmt.Sprintf("storage-%d", broker),
			BrokerEpoch: epoch, MetadataVersion: int64(arg("version", 0))})
		c.process()
		if err != nil {
			return fmt.Sprintf("error %v: %s\n", err.Code, err.Message)
		}
		return fmt.Sprintf("fenced=%v controller-version=%d\n", resp.GetFenced(), resp.GetMetadataVersion())
	case "read":
		n := via()
		var brokers []int32
		err := c.read(n, func(sm *statemachine.StateMachine) {
			for _, b := range sm.Brokers() {
				brokers = append(brokers, b.GetId())
			}
		})
		if err != nil {
			return fmt.Sprintf("error %v: %s\n", err.Code, err.Message)
		}
		return fmt.Sprintf("brokers %v\n", brokers)
	case "brokers":
		var b strings.Builder
		for _, broker := range via().StateMachine().Brokers() {
			fmt.Fprintf(&b, "broker %d epoch=%d fenced=%v\n", broker.GetId(), broker.GetBrokerEpoch(), broker.GetFenced())
		}
		return b.String()
	case "add-learner":
		c.addEmpty(id("id"))
		return scenarioError(changeMembership(c, via(), MembershipChange{Kind: AddLearner, NodeID: id("id"),
			URL: peerURL(id("id")), DirectoryID: c.directory(id("id"))}))
	case "promote":
		return scenarioError(changeMembership(c, via(), MembershipChange{Kind: PromoteLearner, NodeID: id("id")}))
	case "remove-voter":
		return scenarioError(changeMembership(c, via(), MembershipChange{Kind: RemoveVoter, NodeID: id("id")}))
	}
	t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	return ""
}

// scenarioStatus is one line per running controller, in id order.
func scenarioStatus(c *cluster) string {
	var b strings.Builder
	for _, id := range c.ids() {
		st := c.nodes[id].Status()
		role := "follower"
		switch {
		case st.Removed:
			role = "removed"
		case st.Active:
			role = "active"
		case c.nodes[id].IsLeader():
			role = "leader"
		}
		var voters, learners []uint64
		for _, m := range st.Members {
			if m.Learner {
				learners = append(learners, m.ID)
			} else {
				voters = append(voters, m.ID)
			}
		}
		fmt.Fprintf(&b, "%d: %s term=%d leader=%d commit=%d applied=%d voters=%v", id, role, st.Term, st.Leader,
			st.Commit, st.Applied, voters)
		if len(learners) > 0 {
			fmt.Fprintf(&b, " learners=%v", learners)
		}
		if !st.MayVote {
			b.WriteString(" may-not-vote")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func scenarioOutcome(o Outcome) string {
	if o.Err != nil {
		return fmt.Sprintf("error %v: %s\n", o.Err.Code, o.Err.Message)
	}
	return fmt.Sprintf("ok version=%d\n", o.Version)
}

func scenarioError(err error) string {
	if err != nil {
		return fmt.Sprintf("error: %v\n", err)
	}
	return "ok\n"
}
