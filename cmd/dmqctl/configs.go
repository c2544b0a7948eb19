package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
	"github.com/spf13/cobra"
)

// configResource reads "topic NAME" or "cluster".
func configResource(args []string) (*metadatav1.ConfigResource, error) {
	switch {
	case len(args) == 2 && args[0] == "topic":
		return &metadatav1.ConfigResource{Type: metadatav1.ConfigResource_TOPIC, Name: args[1]}, nil
	case len(args) == 1 && args[0] == "cluster":
		return &metadatav1.ConfigResource{Type: metadatav1.ConfigResource_CLUSTER}, nil
	}
	return nil, usagef("want \"topic NAME\" or \"cluster\", got %q", strings.Join(args, " "))
}

func configCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Describe and change configs of topics and the cluster's defaults for new topics"}
	describe := &cobra.Command{Use: "describe topic NAME | cluster", Short: "Every config with its value and where it comes from",
		Args: cobra.RangeArgs(1, 2),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			res, err := configResource(args)
			if err != nil {
				return err
			}
			resp, err := c.DescribeConfigs(ctx, &metadatav1.DescribeConfigsRequest{Resources: []*metadatav1.ConfigResource{res}})
			if err != nil {
				return err
			}
			result := resp.GetResults()[0]
			if code := result.GetErrorCode(); code != metadatav1.ErrorCode_NONE {
				return wire.NewError(code, result.GetErrorMessage(), 0, "")
			}
			t := &table{header: []string{"KEY", "VALUE", "SOURCE", "DEFAULT"}}
			for _, e := range result.GetEntries() {
				t.add(e.GetKey(), e.GetValue(), e.GetSource(), e.GetIsDefault())
			}
			return g.print(resp, t)
		})}
	var sets, deletes []string
	var validateOnly bool
	alter := &cobra.Command{Use: "alter topic NAME | cluster --set KEY=VALUE... --delete KEY...",
		Short: "Set or delete configs (a deleted topic key takes the cluster's default, or the built-in one)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			res, err := configResource(args)
			if err != nil {
				return err
			}
			changes := &metadatav1.ResourceConfigChanges{Resource: res}
			for _, kv := range sets {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return usagef("--set %q: want key=value", kv)
				}
				changes.Ops = append(changes.Ops, &metadatav1.AlterConfigOp{Key: k, Op: metadatav1.AlterConfigOp_SET, Value: v})
			}
			for _, k := range deletes {
				changes.Ops = append(changes.Ops, &metadatav1.AlterConfigOp{Key: k, Op: metadatav1.AlterConfigOp_DELETE})
			}
			if len(changes.Ops) == 0 {
				return usagef("nothing to change: give --set KEY=VALUE or --delete KEY")
			}
			resp, err := c.IncrementalAlterConfigs(ctx, &metadatav1.IncrementalAlterConfigsRequest{
				Resources: []*metadatav1.ResourceConfigChanges{changes}, ValidateOnly: validateOnly})
			if err != nil {
				return err
			}
			result := resp.GetResults()[0]
			t := &table{header: []string{"RESOURCE", "RESULT", "VERSION"}}
			t.add(strings.TrimSpace(fmt.Sprintf("%s %s", strings.ToLower(res.GetType().String()), res.GetName())), result.GetErrorCode(), resp.GetMetadataVersion())
			if perr := g.print(resp, t); perr != nil {
				return perr
			}
			if code := result.GetErrorCode(); code != metadatav1.ErrorCode_NONE {
				return wire.NewError(code, result.GetErrorMessage(), 0, "")
			}
			return nil
		})}
	alter.Flags().StringArrayVar(&sets, "set", nil, "KEY=VALUE to set (repeatable)")
	alter.Flags().StringArrayVar(&deletes, "delete", nil, "KEY to delete (repeatable)")
	alter.Flags().BoolVar(&validateOnly, "validate-only", false, "check the change, changing nothing")
	cmd.AddCommand(describe, alter)
	return cmd
}
