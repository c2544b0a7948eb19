// Command dmqctl operates a DMQ metadata cluster: topics, brokers, the
// controller quorum, watches, and a stand-in storage service.
//
// Exit codes: 0 success, 1 other failure, 2 bad usage, 3 not found,
// 4 conflict (exists, or the state does not allow it), 5 unavailable (no
// leader reachable), 6 invalid argument, 7 not authenticated or not allowed.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/wire"
	"github.com/spf13/cobra"
)

// Exit codes scripts can rely on.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitConflict    = 4
	exitUnavailable = 5
	exitInvalid     = 6
	exitDenied      = 7
)

type globals struct {
	token     string
	tokenFile string
	// tlsCA, tlsCert and tlsKey turn TLS on: the controllers' CA, and a
	// client certificate for clusters that demand one.
	tlsCA, tlsCert, tlsKey string
	endpoints              string
	services               string
	output                 string
	timeout                time.Duration
	out                    io.Writer
	getenv                 func(string) string
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// execute runs dmqctl with args, writing to stdout and stderr, and returns
// the exit code.
func execute(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	g := &globals{out: stdout, getenv: getenv}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	fmt.Fprintln(stderr, "dmqctl:", describeError(err))
	return code
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "dmqctl",
		Short:         "Operate a DMQ metadata cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags := root.PersistentFlags()
	flags.StringVar(&g.endpoints, "endpoints", "", "controller URLs, comma-separated (env DMQ_ENDPOINTS)")
	flags.StringVar(&g.services, "services", "", "a services.json to take the controllers from")
	flags.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	flags.DurationVar(&g.timeout, "timeout", 10*time.Second, "how long to keep trying before giving up")
	flags.StringVar(&g.token, "token", "", "bearer token (env DMQ_TOKEN)")
	flags.StringVar(&g.tokenFile, "token-file", "", "file holding the bearer token")
	flags.StringVar(&g.tlsCA, "tls-ca-file", "", "CA certificate of the controllers: dial them over TLS (env DMQ_TLS_CA_FILE)")
	flags.StringVar(&g.tlsCert, "tls-cert-file", "", "client certificate, for controllers that demand one (env DMQ_TLS_CERT_FILE)")
	flags.StringVar(&g.tlsKey, "tls-key-file", "", "key of the client certificate (env DMQ_TLS_KEY_FILE)")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
	root.AddCommand(topicCommand(g), configCommand(g), partitionCommand(g), rebalanceCommand(g), brokerCommand(g), clusterCommand(g), watchCommand(g), quorumCommand(g), agentCommand(g),
		versionCommand(g), snapshotCommand(g))
	return root
}

// usageError marks a mistake in the command line.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func (g *globals) client() (*client.Client, error) {
	var endpoints []string
	switch {
	case g.endpoints != "":
		endpoints = strings.Split(g.endpoints, ",")
	case g.getenv("DMQ_ENDPOINTS") != "":
		endpoints = strings.Split(g.getenv("DMQ_ENDPOINTS"), ",")
	case g.services != "":
		var err error
		if endpoints, err = client.EndpointsFromServices(g.services); err != nil {
			return nil, usageError{err}
		}
	default:
		endpoints = []string{"http://localhost:8080"}
	}
	switch g.output {
	case "table", "json", "yaml":
	default:
		return nil, usagef("--output %q: want table, json or yaml", g.output)
	}
	token := g.token
	switch {
	case token != "":
	case g.tokenFile != "":
		data, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, usageError{err}
		}
		token = strings.TrimSpace(string(data))
	default:
		token = g.getenv("DMQ_TOKEN")
	}
	tlsConfig, err := g.tls(endpoints)
	if err != nil {
		return nil, usageError{err}
	}
	return client.New(client.Config{Endpoints: endpoints, Token: token, TLS: tlsConfig})
}

// tls is the TLS configuration from the flags and environment: nil (h2c)
// unless a TLS file is named or an endpoint is https://.
func (g *globals) tls(endpoints []string) (*tls.Config, error) {
	ca, cert, key := g.tlsCA, g.tlsCert, g.tlsKey
	if ca == "" {
		ca = g.getenv("DMQ_TLS_CA_FILE")
	}
	if cert == "" {
		cert = g.getenv("DMQ_TLS_CERT_FILE")
	}
	if key == "" {
		key = g.getenv("DMQ_TLS_KEY_FILE")
	}
	secure := ca != "" || cert != "" || key != ""
	for _, e := range endpoints {
		secure = secure || strings.HasPrefix(strings.TrimSpace(e), "https://")
	}
	if !secure {
		return nil, nil
	}
	return auth.ClientTLS(ca, cert, key)
}

func (g *globals) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

func exitCode(err error) int {
	var usage usageError
	if errors.As(err, &usage) || strings.Contains(err.Error(), "unknown command") ||
		strings.Contains(err.Error(), "unknown flag") || strings.Contains(err.Error(), "arg(s)") ||
		strings.Contains(err.Error(), "required flag") {
		return exitUsage
	}
	if errors.Is(err, client.ErrNoLeader) {
		return exitUnavailable
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return exitNotFound
	case connect.CodeAlreadyExists, connect.CodeFailedPrecondition:
		return exitConflict
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return exitUnavailable
	case connect.CodeInvalidArgument:
		return exitInvalid
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		return exitDenied
	}
	return exitFailure
}

func describeError(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		if code := wire.ErrorCodeOf(err); code != 0 {
			return fmt.Sprintf("%s (%s)", ce.Message(), code)
		}
		return ce.Message()
	}
	return err.Error()
}
