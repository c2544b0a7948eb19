package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
	"github.com/spf13/cobra"
)

func brokerID(arg string) (int32, error) {
	n, err := strconv.ParseInt(arg, 10, 32)
	if err != nil || n < 1 {
		return 0, usagef("broker id %q: want a positive integer", arg)
	}
	return int32(n), nil
}

func nodeID(arg string) (uint64, error) {
	n, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || n < 1 {
		return 0, usagef("controller id %q: want a positive integer", arg)
	}
	return n, nil
}

// run wraps a command body with the client and a deadline.
func (g *globals) run(body func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		c, err := g.client()
		if err != nil {
			return err
		}
		ctx, cancel := g.context()
		defer cancel()
		return body(ctx, c, args)
	}
}

func topicsTable(topics []*metadatav1.Topic) *table {
	t := &table{header: []string{"NAME", "ID", "PARTITIONS", "RF", "MIN-ISR", "RETENTION-MS"}}
	for _, topic := range topics {
		t.add(topic.GetName(), topic.GetTopicId(), max(topic.GetPartitionCount(), int32(len(topic.GetPartitions()))), topic.GetReplicationFactor(),
			topic.GetConfig().GetMinInsyncReplicas(), topic.GetConfig().GetRetentionMs())
	}
	return t
}

func partitionsTable(partitions []*metadatav1.Partition) *table {
	t := &table{header: []string{"TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "ELR", "LEADER-EPOCH", "PARTITION-EPOCH"}}
	for _, p := range partitions {
		t.add(p.GetTopic(), p.GetPartition(), p.GetLeader(), ids(p.GetReplicas()), ids(p.GetIsr()), ids(p.GetEligibleLeaderReplicas()),
			p.GetLeaderEpoch(), p.GetPartitionEpoch())
	}
	return t
}

func brokersTable(brokers []*metadatav1.Broker) *table {
	t := &table{header: []string{"ID", "HOST", "PORT", "RACK", "STATE", "EPOCH"}}
	for _, b := range brokers {
		state := "alive"
		switch {
		case b.GetFenced():
			state = "fenced"
		case b.GetInControlledShutdown():
			state = "shutting-down"
		}
		t.add(b.GetId(), b.GetHost(), b.GetPort(), b.GetRack(), state, b.GetBrokerEpoch())
	}
	return t
}

func topicCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "topic", Short: "Create, list, describe, grow and delete topics"}
	var partitions, rf int32
	var configs []string
	create := &cobra.Command{Use: "create NAME", Short: "Create a topic", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			req := &metadatav1.CreateTopicRequest{Name: args[0], Partitions: partitions, ReplicationFactor: rf, Configs: map[string]string{}}
			for _, kv := range configs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return usagef("--config %q: want key=value", kv)
				}
				req.Configs[k] = v
			}
			resp, err := c.CreateTopic(ctx, req)
			if err != nil {
				return err
			}
			return g.print(resp, topicsTable([]*metadatav1.Topic{resp.GetTopic()}))
		})}
	create.Flags().Int32VarP(&partitions, "partitions", "p", 1, "number of partitions")
	create.Flags().Int32VarP(&rf, "replication-factor", "r", 0, "replicas per partition (0: the cluster default)")
	create.Flags().StringArrayVarP(&configs, "config", "c", nil, "topic config key=value (repeatable)")

	list := &cobra.Command{Use: "list", Short: "List topics", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.ListTopics(ctx, &metadatav1.ListTopicsRequest{})
			if err != nil {
				return err
			}
			return g.print(resp, topicsTable(resp.GetTopics()))
		})}
	describe := &cobra.Command{Use: "describe NAME", Short: "Describe a topic and its partitions", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			resp, err := c.DescribeTopic(ctx, &metadatav1.DescribeTopicRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return g.print(resp, partitionsTable(resp.GetPartitions()))
		})}
	showConfigs := &cobra.Command{Use: "configs NAME", Short: "Show a topic's configuration (Kafka keys)", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			resp, err := c.DescribeTopic(ctx, &metadatav1.DescribeTopicRequest{Name: args[0]})
			if err != nil {
				return err
			}
			t := &table{header: []string{"KEY", "VALUE"}}
			for _, entry := range statemachine.TopicConfigEntries(resp.GetTopic().GetConfig()) {
				t.add(entry[0], entry[1])
			}
			return g.print(resp.GetTopic().GetConfig(), t)
		})}
	del := &cobra.Command{Use: "delete NAME", Short: "Delete a topic", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			resp, err := c.DeleteTopic(ctx, &metadatav1.DeleteTopicRequest{Name: args[0]})
			if err != nil {
				return err
			}
			t := &table{header: []string{"DELETED", "VERSION"}}
			t.add(args[0], resp.GetMetadataVersion())
			return g.print(resp, t)
		})}
	var count int32
	grow := &cobra.Command{Use: "add-partitions NAME", Short: "Grow a topic to --count partitions", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			resp, err := c.CreatePartitions(ctx, &metadatav1.CreatePartitionsRequest{Topic: args[0], Count: count})
			if err != nil {
				return err
			}
			return g.print(resp, topicsTable([]*metadatav1.Topic{resp.GetTopic()}))
		})}
	grow.Flags().Int32Var(&count, "count", 0, "the new total number of partitions")
	_ = grow.MarkFlagRequired("count")
	elect := &cobra.Command{Use: "elect-leaders [TOPIC [PARTITION...]]",
		Short: "Move partitions to their preferred leaders (all partitions, a topic's, or some of them)",
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			req := &metadatav1.ElectLeadersRequest{}
			if len(args) > 0 {
				target := &metadatav1.TopicPartitions{Topic: args[0]}
				for _, arg := range args[1:] {
					p, err := strconv.ParseInt(arg, 10, 32)
					if err != nil || p < 0 {
						return usagef("partition %q: want a partition number", arg)
					}
					target.Partitions = append(target.Partitions, int32(p))
				}
				req.Targets = []*metadatav1.TopicPartitions{target}
			}
			resp, err := c.ElectLeaders(ctx, req)
			if err != nil {
				return err
			}
			t := &table{header: []string{"ELECTED", "VERSION"}}
			t.add(resp.GetElected(), resp.GetMetadataVersion())
			return g.print(resp, t)
		})}
	for _, c := range []*cobra.Command{describe, showConfigs, del, grow, elect} {
		c.ValidArgsFunction = g.completeTopics
	}
	cmd.AddCommand(create, list, describe, showConfigs, del, grow, elect)
	cmd.AddCommand(batchCommands(g)...)
	return cmd
}

func brokerCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "broker", Short: "List, describe, register and unregister brokers"}
	list := &cobra.Command{Use: "list", Short: "List brokers", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.ListBrokers(ctx, &metadatav1.ListBrokersRequest{})
			if err != nil {
				return err
			}
			return g.print(resp, brokersTable(resp.GetBrokers()))
		})}
	describe := &cobra.Command{Use: "describe ID", Short: "Describe a broker", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := brokerID(args[0])
			if err != nil {
				return err
			}
			resp, err := c.DescribeBroker(ctx, &metadatav1.DescribeBrokerRequest{Id: id})
			if err != nil {
				return err
			}
			return g.print(resp, brokersTable([]*metadatav1.Broker{resp.GetBroker()}))
		})}
	var id, port int32
	var host, rack, incarnation string
	register := &cobra.Command{Use: "register", Short: "Register a broker", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.RegisterBroker(ctx, &metadatav1.RegisterBrokerRequest{Id: id, Host: host, Port: port, Rack: rack, IncarnationId: incarnation})
			if err != nil {
				return err
			}
			return g.print(resp, brokersTable([]*metadatav1.Broker{resp.GetBroker()}))
		})}
	register.Flags().Int32Var(&id, "id", 0, "broker id")
	register.Flags().StringVar(&host, "host", "", "broker host")
	register.Flags().Int32Var(&port, "port", 0, "broker port")
	register.Flags().StringVar(&rack, "rack", "", "broker rack")
	register.Flags().StringVar(&incarnation, "incarnation", "", "incarnation id of the broker process")
	for _, f := range []string{"id", "host", "port"} {
		_ = register.MarkFlagRequired(f)
	}
	unregister := &cobra.Command{Use: "unregister ID", Short: "Unregister a broker", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := brokerID(args[0])
			if err != nil {
				return err
			}
			resp, err := c.UnregisterBroker(ctx, &metadatav1.UnregisterBrokerRequest{Id: id})
			if err != nil {
				return err
			}
			t := &table{header: []string{"UNREGISTERED", "VERSION"}}
			t.add(id, resp.GetMetadataVersion())
			return g.print(resp, t)
		})}
	describe.ValidArgsFunction, unregister.ValidArgsFunction = g.completeBrokers, g.completeBrokers
	cmd.AddCommand(list, describe, register, unregister, decommissionCommand(g))
	return cmd
}

func clusterCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Cluster-wide metadata"}
	metadata := &cobra.Command{Use: "metadata", Short: "Show the whole metadata and its version", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.GetClusterMetadata(ctx, &metadatav1.GetClusterMetadataRequest{})
			if err != nil {
				return err
			}
			state := resp.GetState()
			t := &table{header: []string{"VERSION", "CONTROLLER-EPOCH", "LEADER", "BROKERS", "TOPICS", "PARTITIONS"}}
			parts := 0
			for _, topic := range state.GetTopics() {
				parts += len(topic.GetPartitions())
			}
			t.add(state.GetMetadataVersion(), resp.GetControllerEpoch(), resp.GetLeaderId(), len(state.GetBrokers()), len(state.GetTopics()), parts)
			return g.print(resp, t)
		})}
	id := &cobra.Command{Use: "id", Short: "Show the cluster id (metadata.cluster-id) the controllers were founded with", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.DescribeQuorum(ctx)
			if err != nil {
				return err
			}
			t := &table{header: []string{"CLUSTER-ID", "LEADER", "TERM"}}
			t.add(resp.GetClusterId(), resp.GetLeaderId(), resp.GetTerm())
			return g.print(resp, t)
		})}
	cmd.AddCommand(metadata, id)
	return cmd
}

func watchCommand(g *globals) *cobra.Command {
	var since int64
	cmd := &cobra.Command{Use: "watch", Short: "Stream metadata changes (Ctrl-C to stop)", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if g.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, g.timeout)
				defer cancel()
			}
			// A stream of rows under one header: fixed widths, since rows
			// arrive one at a time and cannot be aligned afterwards.
			const row = "%-5s %10s %10s %8s %8s %8s %10s\n"
			headerDone := false
			return c.Watch(ctx, since, func(u *metadatav1.WatchMetadataResponse) error {
				if g.output != "table" {
					return g.print(u, nil)
				}
				if !headerDone {
					fmt.Fprintf(g.out, row, "KIND", "FROM", "TO", "BROKERS", "TOPICS", "DELETED", "PARTITIONS")
					headerDone = true
				}
				if d := u.GetDelta(); d != nil {
					fmt.Fprintf(g.out, row, "delta", fmt.Sprint(d.GetFromVersion()), fmt.Sprint(d.GetToVersion()),
						fmt.Sprint(len(d.GetUpsertedBrokers())+len(d.GetRemovedBrokerIds())), fmt.Sprint(len(d.GetUpsertedTopics())),
						fmt.Sprint(len(d.GetDeletedTopics())), fmt.Sprint(len(d.GetChangedPartitions())))
					return nil
				}
				s := u.GetFullState()
				partitions := 0
				for _, topic := range s.GetTopics() {
					partitions += len(topic.GetPartitions())
				}
				fmt.Fprintf(g.out, row, "full", "-", fmt.Sprint(s.GetMetadataVersion()), fmt.Sprint(len(s.GetBrokers())),
					fmt.Sprint(len(s.GetTopics())), "0", fmt.Sprint(partitions))
				return nil
			})
		}}
	cmd.Flags().Int64Var(&since, "since", 0, "start after this metadata version (0: a full state first)")
	cmd.Flags().Lookup("since").Usage += "; --timeout bounds the watch, 0 watches until interrupted"
	return cmd
}

func membersTable(members []*metadatav1.QuorumMember) *table {
	t := &table{header: []string{"ID", "URL", "ROLE", "LEADER", "MATCH", "LAG", "DIRECTORY"}}
	for _, m := range members {
		role := "voter"
		if m.GetRole() == metadatav1.QuorumRole_QUORUM_ROLE_LEARNER {
			role = "learner"
		}
		directory := "-"
		if m.GetDirectoryId() != 0 {
			directory = fmt.Sprintf("%016x", m.GetDirectoryId())
		}
		t.add(m.GetNodeId(), m.GetUrl(), role, m.GetIsLeader(), m.GetMatchIndex(), m.GetLag(), directory)
	}
	return t
}

func quorumCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "quorum", Short: "Inspect and change the controller quorum"}
	describe := &cobra.Command{Use: "describe", Short: "Leader, term and members with their lag", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.DescribeQuorumFromLeader(ctx)
			if err != nil {
				return err
			}
			t := membersTable(resp.GetMembers())
			if !resp.GetProgressKnown() {
				// Only the leader tracks them: a follower's zeros would
				// look like a healthy quorum.
				for _, row := range t.rows {
					row[4], row[5] = "?", "?"
				}
				if err := g.print(resp, t); err != nil {
					return err
				}
				if g.output == "" || g.output == "table" {
					why := "the leader could not be asked"
					if resp.GetLeaderId() == 0 {
						why = "it knows no leader: an election is in progress, or no quorum is reachable"
					}
					fmt.Fprintf(g.out, "(match and lag are known only to the leader; controller %d answered: %s)\n", resp.GetAnsweredBy(), why)
				}
				return nil
			}
			return g.print(resp, t)
		})}
	var url string
	addVoter := &cobra.Command{Use: "add-voter ID --url URL", Short: "Add a voter", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := nodeID(args[0])
			if err != nil {
				return err
			}
			resp, err := c.AddVoter(ctx, &metadatav1.AddVoterRequest{NodeId: id, Url: url})
			if err != nil {
				return err
			}
			return g.print(resp, membersTable(resp.GetMembers()))
		})}
	addVoter.Flags().StringVar(&url, "url", "", "where peers reach the new controller")
	_ = addVoter.MarkFlagRequired("url")
	var learnerURL string
	addLearner := &cobra.Command{Use: "add-learner ID --url URL", Short: "Add a learner", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := nodeID(args[0])
			if err != nil {
				return err
			}
			resp, err := c.AddLearner(ctx, &metadatav1.AddLearnerRequest{NodeId: id, Url: learnerURL})
			if err != nil {
				return err
			}
			return g.print(resp, membersTable(resp.GetMembers()))
		})}
	addLearner.Flags().StringVar(&learnerURL, "url", "", "where peers reach the new controller")
	_ = addLearner.MarkFlagRequired("url")
	removeVoter := &cobra.Command{Use: "remove-voter ID", Short: "Remove a voter or learner", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := nodeID(args[0])
			if err != nil {
				return err
			}
			resp, err := c.RemoveVoter(ctx, &metadatav1.RemoveVoterRequest{NodeId: id})
			if err != nil {
				return err
			}
			return g.print(resp, membersTable(resp.GetMembers()))
		})}
	promote := &cobra.Command{Use: "promote ID", Short: "Make a learner a voter", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := nodeID(args[0])
			if err != nil {
				return err
			}
			resp, err := c.PromoteLearner(ctx, &metadatav1.PromoteLearnerRequest{NodeId: id})
			if err != nil {
				return err
			}
			return g.print(resp, membersTable(resp.GetMembers()))
		})}
	transfer := &cobra.Command{Use: "transfer-leader [ID]", Short: "Move leadership (to the most caught-up voter if no ID)", Args: cobra.MaximumNArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			var target uint64
			if len(args) == 1 {
				id, err := nodeID(args[0])
				if err != nil {
					return err
				}
				target = id
			}
			resp, err := c.TransferLeader(ctx, &metadatav1.TransferLeaderRequest{TargetNodeId: target})
			if err != nil {
				return err
			}
			t := &table{header: []string{"LEADER", "TERM"}}
			t.add(resp.GetLeaderId(), resp.GetTerm())
			return g.print(resp, t)
		})}
	snapshot := &cobra.Command{Use: "snapshot", Short: "Snapshot the leader's state and compact its log", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.Snapshot(ctx)
			if err != nil {
				return err
			}
			t := &table{header: []string{"INDEX", "BYTES"}}
			t.add(resp.GetIndex(), resp.GetSizeBytes())
			return g.print(resp, t)
		})}
	cmd.AddCommand(describe, addVoter, removeVoter, addLearner, promote, transfer, snapshot)
	return cmd
}

func agentCommand(g *globals) *cobra.Command {
	var cfg client.AgentConfig
	var listen string
	var runFor time.Duration
	cmd := &cobra.Command{Use: "storage-agent", Short: "Run a stand-in storage service: register, heartbeat, print the pushes (or watched updates) it receives",
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if cfg.HeartbeatInterval <= 0 {
				return usagef("--interval %v: the heartbeat interval must be positive", cfg.HeartbeatInterval)
			}
			out := &lockedWriter{w: g.out} // pushes and warnings arrive on their own goroutines
			cfg.OnUpdate = func(version int64, full bool, state *metadatav1.ClusterState) {
				kind := "delta"
				if full {
					kind = "full"
				}
				source := "push"
				if cfg.Watch {
					source = "update" // a push or a watched update
				}
				fmt.Fprintf(out, "%s %s: version %d, %d brokers, %d topics\n", kind, source, version, len(state.GetBrokers()), len(state.GetTopics()))
			}
			agent, err := client.NewStorageAgent(c, cfg)
			if err != nil {
				return usageError{err}
			}
			listener, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			mux := http.NewServeMux()
			mux.Handle(agent.Handler())
			server := wire.NewHTTPServer(listen, mux)
			go func() { _ = server.Serve(listener) }()
			defer server.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if runFor > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, runFor)
				defer cancel()
			}
			fmt.Fprintf(out, "storage service %d: StorageSyncService on %s, heartbeating every %v\n", cfg.BrokerID, listener.Addr(), cfg.HeartbeatInterval)
			if cfg.Watch {
				fmt.Fprintf(out, "storage service %d: watching the controllers' metadata\n", cfg.BrokerID)
			} else {
				go warnWithoutPushes(ctx, out, agent, cfg)
			}
			if err := agent.Run(ctx); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		}}
	flags := cmd.Flags()
	flags.Int32Var(&cfg.BrokerID, "id", 0, "broker id")
	flags.StringVar(&cfg.Host, "host", "localhost", "broker host to register")
	flags.Int32Var(&cfg.Port, "port", 9092, "broker port to register")
	flags.StringVar(&cfg.Rack, "rack", "", "broker rack")
	flags.StringVar(&cfg.IncarnationID, "incarnation", fmt.Sprintf("agent-%d", time.Now().UnixNano()), "incarnation id")
	flags.DurationVar(&cfg.HeartbeatInterval, "interval", time.Second, "heartbeat interval")
	flags.StringVar(&listen, "listen", ":8081", "address to serve StorageSyncService on (the URL in services.json)")
	flags.DurationVar(&runFor, "run-for", 0, "stop after this long (0: run until interrupted)")
	flags.BoolVar(&cfg.Watch, "watch", false, "also follow the controllers' WatchMetadata stream, for a service they cannot push to")
	_ = cmd.MarkFlagRequired("id")
	return cmd
}

// versionCommand prints dmqctl's build and the build of the first
// controller that answers; the client's is printed even when none does.
func versionCommand(g *globals) *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Show the client's and a controller's build", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			fmt.Fprintln(g.out, "client:", wire.Build())
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.context()
			defer cancel()
			build, endpoint, err := c.ServerVersion(ctx)
			if err != nil {
				return connect.NewError(connect.CodeUnavailable, err)
			}
			fmt.Fprintf(g.out, "server: %s (%s)\n", build, endpoint)
			return nil
		}}
}

// warnWithoutPushes says once, if the controllers answer that they have no
// push URL for this service, that it will receive no push: a stand-in
// storage service that printed nothing left the operator guessing.
func warnWithoutPushes(ctx context.Context, out io.Writer, agent *client.StorageAgent, cfg client.AgentConfig) {
	ticker := time.NewTicker(cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if agent.PushesUnconfigured() {
			fmt.Fprintf(out, "the controllers have no push URL for storage service %d, so it receives no push: "+
				"list it under storage-services in the controllers' services.json (its URL is where --listen serves); "+
				"or run it with --watch to follow the controllers' metadata instead; meanwhile it learns only its fencing from heartbeats\n", cfg.BrokerID)
			return
		}
	}
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// completionTimeout bounds the call a shell completion makes: a shell
// waits for it at every TAB.
const completionTimeout = 2 * time.Second

// completeTopics completes a topic name from the cluster's topics (a stale
// read: any controller answers at once).
func (g *globals) completeTopics(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	return g.complete(args, prefix, func(ctx context.Context, c *client.Client) ([]string, error) {
		resp, err := c.ListTopics(ctx, &metadatav1.ListTopicsRequest{AllowStale: true})
		var names []string
		for _, t := range resp.GetTopics() {
			names = append(names, t.GetName())
		}
		return names, err
	})
}

// completeBrokers completes a broker id from the cluster's brokers, each
// described by its endpoint.
func (g *globals) completeBrokers(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	return g.complete(args, prefix, func(ctx context.Context, c *client.Client) ([]string, error) {
		resp, err := c.ListBrokers(ctx, &metadatav1.ListBrokersRequest{AllowStale: true})
		var ids []string
		for _, b := range resp.GetBrokers() {
			ids = append(ids, fmt.Sprintf("%d\t%s:%d", b.GetId(), b.GetHost(), b.GetPort()))
		}
		return ids, err
	})
}

// complete completes the first argument from the candidates list gives
// (each "value" or "value\tdescription") that begin with prefix; any
// failure completes nothing rather than file names.
func (g *globals) complete(args []string, prefix string, list func(context.Context, *client.Client) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := g.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	candidates, err := list(ctx, c)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var matches []string
	for _, candidate := range candidates {
		if strings.HasPrefix(candidate, prefix) {
			matches = append(matches, candidate)
		}
	}
	return matches, cobra.ShellCompDirectiveNoFileComp
}

// snapshotCommand saves a consistent backup of the metadata to a file, for
// `dmqd restore` (disaster recovery: a new cluster from the backup).
func snapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Back up the metadata (restore with dmqd restore)"}
	save := &cobra.Command{Use: "save FILE", Short: "Save a consistent backup of the metadata to FILE", Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			file, endpoint, err := c.SaveBackup(ctx)
			if err != nil {
				return connect.NewError(connect.CodeUnavailable, err)
			}
			// Written beside, synced, then renamed: FILE is whole or absent.
			tmp := args[0] + ".part"
			f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			if _, err := f.Write(file); err != nil {
				f.Close()
				return err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "saved a backup of %d bytes from %s to %s\n", len(file), endpoint, args[0])
			return nil
		})}
	cmd.AddCommand(save)
	return cmd
}
