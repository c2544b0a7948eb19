package client_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestClientLinksNoServerCode: a storage service that embeds the client
// must not link the controller. Of this module the client may link only
// the generated types, wire and the planted-bug switches (off outside
// plantedbugs builds); of the world, no Raft and no Pebble.
func TestClientLinksNoServerCode(t *testing.T) {
	const module = "github.com/dmq-project/metadata"
	out, err := exec.Command("go", "list", "-deps", module+"/client").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, module+"/wire", "go list answered something else: %s", out)
	for _, dep := range deps {
		ours := strings.HasPrefix(dep, module+"/")
		allowed := dep == module+"/client" || dep == module+"/wire" || dep == module+"/internal/planted" ||
			strings.HasPrefix(dep, module+"/gen/")
		require.False(t, ours && !allowed, "the client links %s, a package of the server", dep)
		require.NotContains(t, dep, "go.etcd.io/raft", "the client links Raft")
		require.NotContains(t, dep, "cockroachdb/pebble", "the client links Pebble")
	}
}
