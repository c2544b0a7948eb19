package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// stdin is where "--file -" reads; a variable so that tests can feed it.
var stdin io.Reader = os.Stdin

// readInput reads a --file argument: a path, or - for stdin.
func readInput(path string) ([]byte, error) {
	read := func() ([]byte, error) { return os.ReadFile(path) }
	if path == "-" {
		read = func() ([]byte, error) { return io.ReadAll(stdin) }
	}
	data, err := read()
	if err != nil {
		return nil, usageError{err}
	}
	return data, nil
}

// readBatchFile reads a CreateTopicsRequest from YAML or JSON: the body of
// POST /api/v1/metadata/topics:batchCreate, e.g.
//
//	atomic: true
//	topics:
//	  - name: orders
//	    partitions: 12
//	    replicationFactor: 3
//	    configs: {retention.ms: 86400000}
//
// Config values may be written as numbers or booleans; unknown keys are
// refused.
func readBatchFile(path string) (*metadatav1.CreateTopicsRequest, error) {
	data, err := readInput(path)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := yaml.Unmarshal(data, &generic); err != nil {
		return nil, usagef("%s: %v", path, err)
	}
	if topics, ok := generic.(map[string]any)["topics"].([]any); ok {
		for _, topic := range topics {
			t, ok := topic.(map[string]any)
			if !ok {
				continue
			}
			if configs, ok := t["configs"].(map[string]any); ok {
				for k, v := range configs {
					configs[k] = fmt.Sprint(v)
				}
			}
		}
	}
	asJSON, err := json.Marshal(generic)
	if err != nil {
		return nil, usagef("%s: %v", path, err)
	}
	req := &metadatav1.CreateTopicsRequest{}
	if err := protojson.Unmarshal(asJSON, req); err != nil {
		return nil, usagef("%s: %v", path, err)
	}
	return req, nil
}

// batchResults is what a batch answered: its response, or the response a
// refused atomic batch carries in its error.
func batchResults[R proto.Message](resp R, err error) (R, bool) {
	if err == nil {
		return resp, true
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if r, ok := v.(R); ok {
					return r, true
				}
			}
		}
	}
	return resp, false
}

// printBatch prints a batch's per-topic results, those of a refused atomic
// batch too (from the error's detail), and returns the error to exit with.
func printBatch[R interface {
	proto.Message
	GetResults() []*metadatav1.TopicResult
}](g *globals, resp R, err error, verb string) error {
	resp, ok := batchResults(resp, err)
	if !ok {
		return err
	}
	if perr := g.print(resp, resultsTable(resp.GetResults())); perr != nil {
		return perr
	}
	if err != nil {
		return err
	}
	return itemsFailed(resp.GetResults(), "topics", verb)
}

func resultsTable(results []*metadatav1.TopicResult) *table {
	t := &table{header: []string{"NAME", "RESULT", "ID", "PARTITIONS", "RF", "MESSAGE"}}
	for _, r := range results {
		t.add(r.GetName(), r.GetErrorCode(), r.GetTopicId(), r.GetPartitions(), r.GetReplicationFactor(), r.GetErrorMessage())
	}
	return t
}

// itemsFailed is the error of a batch some of whose topics failed: the
// first failure's code decides the exit code.
func itemsFailed(results []*metadatav1.TopicResult, noun, verb string) error {
	var first *metadatav1.TopicResult
	failed := 0
	for _, r := range results {
		if r.GetErrorCode() != metadatav1.ErrorCode_NONE {
			failed++
			if first == nil {
				first = r
			}
		}
	}
	if first == nil {
		return nil
	}
	return wire.NewError(first.GetErrorCode(), fmt.Sprintf("%d of %d %s were not %s; the first, %q: %s",
		failed, len(results), noun, verb, first.GetName(), first.GetErrorMessage()), 0, "")
}

func batchCommands(g *globals) []*cobra.Command {
	var file string
	var atomic, validateOnly bool
	create := &cobra.Command{Use: "create-batch --file FILE",
		Short: "Create many topics in one request, from YAML or JSON (- for stdin)",
		Long: "Create many topics in one request and one log record. Each topic succeeds or fails on its own, or\n" +
			"with --atomic all or none; --validate-only answers what the request would, creating nothing.\n" +
			"The file holds {atomic, topics: [{name, partitions, replicationFactor, configs}]}.\n" +
			"Exits non-zero when any topic was not created.",
		Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			req, err := readBatchFile(file)
			if err != nil {
				return err
			}
			req.Atomic = req.Atomic || atomic
			req.ValidateOnly = req.ValidateOnly || validateOnly
			resp, err := c.CreateTopics(ctx, req)
			return printBatch(g, resp, err, map[bool]string{false: "created", true: "valid"}[req.ValidateOnly])
		})}
	create.Flags().StringVarP(&file, "file", "f", "", "the batch, YAML or JSON; - reads stdin")
	create.Flags().BoolVar(&atomic, "atomic", false, "create all topics or none")
	create.Flags().BoolVar(&validateOnly, "validate-only", false, "check the batch against the cluster, creating nothing")
	_ = create.MarkFlagRequired("file")

	var delAtomic, delValidateOnly bool
	del := &cobra.Command{Use: "delete-batch NAME...", Short: "Delete many topics in one request",
		Args: cobra.MinimumNArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, args []string) error {
			req := &metadatav1.DeleteTopicsRequest{Names: args, Atomic: delAtomic, ValidateOnly: delValidateOnly}
			resp, err := c.DeleteTopics(ctx, req)
			return printBatch(g, resp, err, map[bool]string{false: "deleted", true: "valid"}[delValidateOnly])
		})}
	del.Flags().BoolVar(&delAtomic, "atomic", false, "delete all topics or none")
	del.Flags().BoolVar(&delValidateOnly, "validate-only", false, "check the batch against the cluster, deleting nothing")
	return []*cobra.Command{create, del}
}
