package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coreDirs are the packages DESIGN.md section 3 holds to the rules,
// relative to this one: the state machine, the node, and the simulator that
// drives them (one goroutine, one seeded source; the same seed must give the
// same trace). The production runner lives outside them (its own package),
// by design.
var coreDirs = []string{"../statemachine", ".", "../sim"}

func TestCorePackagesAreDeterministic(t *testing.T) {
	for _, dir := range coreDirs {
		t.Run(dir, func(t *testing.T) {
			violations, err := CheckDir(dir)
			require.NoError(t, err)
			for _, v := range violations {
				t.Errorf("%s", v)
			}
		})
	}
}

// TestCheckerCatchesEveryRule keeps the checker honest: a file breaking each
// rule once must produce one violation per rule, and annotated lines none.
func TestCheckerCatchesEveryRule(t *testing.T) {
	dir := t.TempDir()
	src := `package bad

import (
	"math/rand"
	"sync"
	"time"
)

var mu sync.Mutex

func Bad(m map[string]int) int {
	go func() {}()
	ch := make(chan int, 1)
	ch <- 1
	select {
	case v := <-ch:
		_ = v
	default:
	}
	_ = time.Now()
	time.Sleep(time.Millisecond)
	n := rand.Intn(3)
	n += rand.New(rand.NewSource(1)).Intn(3)
	for k := range m {
		n += len(k)
	}
	for _, v := range m { // determinism: a sum does not depend on order
		n += v
	}
	_ = time.Duration(5) * time.Second
	var t0 time.Time
	_ = t0.After(t0)
	return n
}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.go"), []byte(src), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module bad\n\ngo 1.26\n"), 0o644))
	violations, err := CheckDir(dir)
	require.NoError(t, err)
	var lines []int
	for _, v := range violations {
		lines = append(lines, v.Position.Line)
	}
	// imports sync (5); go (12); chan type (13); send (14); select (15);
	// receive (16); time.Now (20); time.Sleep (21); global rand.Intn (22),
	// not a seeded generator's (23); map range (24).
	assert.Equal(t, []int{5, 12, 13, 14, 15, 16, 20, 21, 22, 24}, lines, "%v", violations)
}
