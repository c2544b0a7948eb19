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
