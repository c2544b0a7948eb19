package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// reassignmentPlan is Kafka's reassignment JSON (kafka-reassign-partitions
// --reassignment-json-file), in JSON or YAML:
//
//	{"version": 1, "partitions": [{"topic": "orders", "partition": 0, "replicas": [1, 2, 3]}]}
type reassignmentPlan struct {
	Version    int `json:"version" yaml:"version"`
	Partitions []struct {
		Topic     string  `json:"topic" yaml:"topic"`
		Partition int32   `json:"partition" yaml:"partition"`
		Replicas  []int32 `json:"replicas" yaml:"replicas"`
	} `json:"partitions" yaml:"partitions"`
}

func readPlan(path string) (*reassignmentPlan, error) {
	data, err := readInput(path)
	if err != nil {
		return nil, err
	}
	plan := &reassignmentPlan{}
	if json.Unmarshal(data, plan) != nil {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(plan); err != nil {
			return nil, usagef("%s: %v", path, err)
		}
	}
	if len(plan.Partitions) == 0 {
		return nil, usagef("%s names no partition: want {\"partitions\": [{\"topic\", \"partition\", \"replicas\"}]}", path)
	}
	return plan, nil
}

func partitionCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "partition", Short: "Move partitions between brokers (reassignments)"}
	var file string
	var cancel bool
	reassign := &cobra.Command{Use: "reassign --file PLAN",
		Short: "Move partitions to the target replicas of a plan (Kafka's reassignment JSON), or cancel their moves",
		Long: "Move partitions to target replica lists: while a partition moves, its replicas are the union; the new\n" +
			"ones join the ISR as the leader reports them caught up, then the old ones leave. --cancel sends every\n" +
			"partition of the plan back to the replicas it had. Exits non-zero when any partition was refused.",
		Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			plan, err := readPlan(file)
			if err != nil {
				return err
			}
			req := &metadatav1.AlterPartitionReassignmentsRequest{}
			for _, p := range plan.Partitions {
				ra := &metadatav1.PartitionReassignment{Topic: p.Topic, Partition: p.Partition, Replicas: p.Replicas}
				if cancel {
					ra.Replicas = nil
				}
				req.Reassignments = append(req.Reassignments, ra)
			}
			resp, err := c.AlterPartitionReassignments(ctx, req)
			if err != nil {
				return err
			}
			t := &table{header: []string{"TOPIC", "PARTITION", "RESULT", "MESSAGE"}}
			var results []*metadatav1.TopicResult
			for _, r := range resp.GetResults() {
				t.add(r.GetTopic(), r.GetPartition(), r.GetErrorCode(), r.GetErrorMessage())
				results = append(results, &metadatav1.TopicResult{Name: fmt.Sprintf("%s-%d", r.GetTopic(), r.GetPartition()),
					ErrorCode: r.GetErrorCode(), ErrorMessage: r.GetErrorMessage()})
			}
			if perr := g.print(resp, t); perr != nil {
				return perr
			}
			return itemsFailed(results, "partitions", "moved")
		})}
	reassign.Flags().StringVarP(&file, "file", "f", "", "the plan, JSON or YAML; - reads stdin")
	reassign.Flags().BoolVar(&cancel, "cancel", false, "cancel the moves of the plan's partitions")
	_ = reassign.MarkFlagRequired("file")
	list := &cobra.Command{Use: "reassignments", Short: "List the partitions being moved", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.ListPartitionReassignments(ctx, &metadatav1.ListPartitionReassignmentsRequest{})
			if err != nil {
				return err
			}
			t := &table{header: []string{"TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"}}
			for _, r := range resp.GetReassignments() {
				t.add(r.GetTopic(), r.GetPartition(), ids(r.GetReplicas()), ids(r.GetAddingReplicas()), ids(r.GetRemovingReplicas()))
			}
			return g.print(resp, t)
		})}
	cmd.AddCommand(reassign, list)
	return cmd
}

func balanceTable(s *metadatav1.BalanceStatus) *table {
	t := &table{header: []string{"PLANNED", "STARTED", "SKIPPED", "PENDING", "MOVING", "MAX-MOVING", "DRAINING", "SINCE"}}
	t.add(s.GetPlanned(), s.GetStarted(), s.GetSkipped(), s.GetPending(), s.GetMoving(), s.GetMaxMoving(), ids(s.GetDraining()), s.GetSinceVersion())
	return t
}

// rebalance runs (or, dry, shows) a plan and prints its moves.
func rebalance(ctx context.Context, g *globals, c *client.Client, req *metadatav1.RebalanceRequest) error {
	resp, err := c.Rebalance(ctx, req)
	if err != nil {
		return err
	}
	t := &table{header: []string{"TOPIC", "PARTITION", "REPLICAS"}}
	for _, m := range resp.GetMoves() {
		t.add(m.GetTopic(), m.GetPartition(), ids(m.GetReplicas()))
	}
	return g.print(resp, t)
}

func rebalanceCommand(g *globals) *cobra.Command {
	var dryRun bool
	var maxMoving int32
	cmd := &cobra.Command{Use: "rebalance", Short: "Balance replicas and preferred leaders across the live brokers",
		Long: "Plan the moves that balance replicas and preferred leaders across the live brokers within rack\n" +
			"constraints, with few moves, and run them as reassignments, at most --max-moving partitions at once.\n" +
			"--dry-run prints the plan only. `dmqctl rebalance status` shows the progress.",
		Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			return rebalance(ctx, g, c, &metadatav1.RebalanceRequest{DryRun: dryRun, MaxMoving: maxMoving})
		})}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan, move nothing")
	cmd.Flags().Int32Var(&maxMoving, "max-moving", 0, "partitions moving at once (0: 100)")
	status := &cobra.Command{Use: "status", Short: "The progress of the last plan", Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			resp, err := c.DescribeBalance(ctx, &metadatav1.DescribeBalanceRequest{})
			if err != nil {
				return err
			}
			return g.print(resp, balanceTable(resp.GetStatus()))
		})}
	cmd.AddCommand(status)
	return cmd
}

func decommissionCommand(g *globals) *cobra.Command {
	var dryRun bool
	var maxMoving int32
	cmd := &cobra.Command{Use: "decommission ID", Short: "Move every replica off a broker (then unregister it)",
		Args: cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := brokerID(args[0])
			if err != nil {
				return err
			}
			return rebalance(ctx, g, c, &metadatav1.RebalanceRequest{DryRun: dryRun, MaxMoving: maxMoving, Decommission: []int32{id}})
		})}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan, move nothing")
	cmd.Flags().Int32Var(&maxMoving, "max-moving", 0, "partitions moving at once (0: 100)")
	return cmd
}
