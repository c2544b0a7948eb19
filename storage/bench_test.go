package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// benchDir is a real directory on the disk under test: DMQ_BENCH_DIR, or the
// system's temporary directory.
func benchDir(b *testing.B) string {
	if dir := os.Getenv("DMQ_BENCH_DIR"); dir != "" {
		d, err := os.MkdirTemp(dir, "dmq-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return b.TempDir()
}

// BenchmarkAppendSync measures Save with MustSync on Pebble in a real
// directory, at batch sizes of 1, 16 and 256 entries of 256 bytes: entries/s
// and syncs/s. Compare with BenchmarkRawFdatasync, the physical limit.
func BenchmarkAppendSync(b *testing.B) {
	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte(i)
	}
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch-%d", size), func(b *testing.B) {
			s, err := OpenPebble(filepath.Join(benchDir(b), "db"), vfs.Default)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s.cacheEntriesMax = 1024
			next := uint64(1)
			b.SetBytes(int64(size * len(payload)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				entries := make([]*raftpb.Entry, size)
				for j := range entries {
					entries[j] = &raftpb.Entry{Index: new(next), Term: new(uint64(1)), Data: payload}
					next++
				}
				hs := hardState(1, 1, next-1)
				if err := s.Save(Update{HardState: hs, Entries: entries, MustSync: true}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
		})
	}
}

// BenchmarkRawFdatasync appends 256 bytes to a plain file and fdatasyncs it:
// the disk's own limit, measured in the same run.
func BenchmarkRawFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(benchDir(b), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	payload := make([]byte, 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Write(payload); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
}
