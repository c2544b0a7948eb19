package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// probeCommand is `dmqd probe [--url URL]`: it asks a controller's /readyz (or
// any URL) and succeeds on 200. A container image built FROM scratch has
// no shell or curl for its HEALTHCHECK; the binary it runs probes itself.
func probeCommand(args []string) error {
	flags := flag.NewFlagSet("dmqd probe", flag.ContinueOnError)
	url := flags.String("url", "http://127.0.0.1:8080/readyz", "the probe to ask")
	timeout := flags.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("probe takes no arguments, got %q", flags.Args())
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(fmt.Sprintf("%s: HTTP %d %s", *url, resp.StatusCode, body)))
	}
	return nil
}
