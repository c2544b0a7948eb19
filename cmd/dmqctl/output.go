package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// table is rows under a header, printed aligned.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = fmt.Sprint(c)
	}
	t.rows = append(t.rows, row)
}

// print writes msg in the chosen format: the table for humans, JSON or YAML
// of the response message for scripts.
func (g *globals) print(msg proto.Message, t *table) error {
	switch g.output {
	case "json", "yaml":
		data, err := protojson.MarshalOptions{UseProtoNames: false, EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			return err
		}
		// protojson's whitespace is deliberately unstable: normalise it.
		var indented bytes.Buffer
		if err := json.Indent(&indented, data, "", "  "); err != nil {
			return err
		}
		if g.output == "json" {
			_, err = fmt.Fprintln(g.out, indented.String())
			return err
		}
		var generic any
		if err := json.Unmarshal(data, &generic); err != nil {
			return err
		}
		out, err := yaml.Marshal(generic)
		if err != nil {
			return err
		}
		_, err = g.out.Write(out)
		return err
	}
	w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(t.header, "\t"))
	for _, row := range t.rows {
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

func ids(list []int32) string {
	parts := make([]string, len(list))
	for i, id := range list {
		parts[i] = fmt.Sprint(id)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
