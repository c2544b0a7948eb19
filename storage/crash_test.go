package storage

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// view is everything a restarted node can observe of a store.
type view struct {
	hardState               string
	first, last             uint64
	terms                   []uint64
	data                    []string
	snapIndex, snapTerm     uint64
	snapData, snapConfState string
}

func observe(t testing.TB, s *Store) view {
	t.Helper()
	hs, cs, err := s.InitialState()
	require.NoError(t, err)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	v := view{hardState: hs.String(), first: first, last: last, snapConfState: cs.String()}
	for i := first - 1; i <= last; i++ {
		term, err := s.Term(i)
		require.NoError(t, err)
		v.terms = append(v.terms, term)
	}
	if last >= first {
		entries, err := s.Entries(first, last+1, ^uint64(0))
		require.NoError(t, err)
		for _, e := range entries {
			v.data = append(v.data, string(e.GetData()))
		}
	}
	snap, err := s.Snapshot()
	require.NoError(t, err)
	v.snapIndex, v.snapTerm, v.snapData = snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm(), string(snap.GetData())
	return v
}

// workloadStep is one operation of the crash workload. synced says whether
// its success means it is durable.
type workloadStep struct {
	name   string
	synced bool
	run    func(s *Store) error
}

// crashWorkload mixes synced appends, unsynced commit-only hard states,
// conflicting overwrites, snapshots, compaction and a snapshot from a leader.
func crashWorkload() []workloadStep {
	var steps []workloadStep
	term, last := uint64(1), uint64(0)
	add := func(name string, synced bool, run func(s *Store) error) {
		steps = append(steps, workloadStep{name: name, synced: synced, run: run})
	}
	for round := 0; round < 12; round++ {
		if round%4 == 3 {
			term++
		}
		first, count := last+1, uint64(round%3+1)
		if round == 6 {
			first = last - 1 // a new leader overwrites two uncommitted entries
		}
		entries := make([]*raftpb.Entry, count)
		for i := range entries {
			entries[i] = ent(first+uint64(i), term)
			entries[i].Data = []byte(fmt.Sprintf("round %d entry %d", round, first+uint64(i)))
		}
		last = first + count - 1
		hs := hardState(term, 1, last-1)
		add(fmt.Sprintf("append %d..%d", first, last), true, func(s *Store) error {
			return s.Save(Update{HardState: hs, Entries: entries, MustSync: true})
		})
		commitOnly := hardState(term, 1, last)
		add(fmt.Sprintf("commit %d", last), false, func(s *Store) error {
			return s.Save(Update{HardState: commitOnly})
		})
		if round == 5 || round == 9 {
			at := last - 1
			add(fmt.Sprintf("snapshot at %d", at), true, func(s *Store) error {
				_, err := s.CreateSnapshot(at, confState(1, 2, 3), []byte(fmt.Sprintf("state@%d", at)))
				return err
			})
			add(fmt.Sprintf("compact to %d", at-1), true, func(s *Store) error { return s.Compact(at - 1) })
		}
	}
	leaderSnap := &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{Index: new(last + 20), Term: new(term + 1), ConfState: confState(1, 2, 3, 4)},
		Data:     []byte("state from the leader"),
	}
	add("snapshot from the leader", true, func(s *Store) error {
		return s.Save(Update{HardState: hardState(term+1, 2, last+20), Snapshot: leaderSnap, MustSync: true})
	})
	tail := ents(last+21, term+1, term+1)
	add("append after the snapshot", true, func(s *Store) error {
		return s.Save(Update{HardState: hardState(term+1, 2, last+22), Entries: tail, MustSync: true})
	})
	return steps
}

// runWorkload runs the steps, recording the view after each (index 0 is the
// empty store). before(i) is called before step i runs.
func runWorkload(t testing.TB, s *Store, steps []workloadStep, before func(i int)) []view {
	views := []view{observe(t, s)}
	for i, step := range steps {
		before(i + 1)
		require.NoError(t, step.run(s), step.name)
		views = append(views, observe(t, s))
	}
	return views
}

// crashPoint is the disk as it could be after a crash at one write.
type crashPoint struct {
	fs *vfs.MemFS
	// lastDurable is the last step whose success guaranteed durability;
	// inFlight the step running when the crash happened (or the last done).
	lastDurable, inFlight int
}

// TestPebbleCrashAtEveryWrite counts the file-system writes of the workload,
// takes a crash clone (only synced data survives) at every one of them, and
// checks that each clone reopens to the exact state after some step between
// the last durably acknowledged one and the one in flight: nothing synced is
// lost, no batch is half there, hard state and log agree.
func TestPebbleCrashAtEveryWrite(t *testing.T) {
	steps := crashWorkload()
	mem := vfs.NewCrashableMem()
	var mu sync.Mutex
	var points []crashPoint
	current, lastDurable := 0, 0
	var writes int
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		writes++
		points = append(points, crashPoint{
			fs:          mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0}),
			lastDurable: lastDurable, inFlight: current,
		})
		return nil
	}))
	s, err := OpenPebble("db", fs)
	require.NoError(t, err)
	views := runWorkload(t, s, steps, func(i int) {
		mu.Lock()
		defer mu.Unlock()
		if i > 1 && steps[i-2].synced {
			lastDurable = i - 1
		}
		current = i
	})
	mu.Lock()
	if steps[len(steps)-1].synced {
		lastDurable = len(steps)
	}
	mu.Unlock()
	require.NoError(t, s.Close())
	require.Greater(t, writes, len(steps), "the workload must write")
	t.Logf("%d steps, %d file-system writes, %d crash points", len(steps), writes, len(points))

	for k, point := range points {
		recovered, err := OpenPebble("db", point.fs)
		if point.lastDurable == 0 && err != nil {
			// Crashed while Pebble created its first files: nothing was
			// acknowledged, so an unopenable directory loses nothing.
			continue
		}
		require.NoError(t, err, "crash point %d", k)
		got := observe(t, recovered)
		matched := -1
		for j := point.lastDurable; j <= point.inFlight && j < len(views); j++ {
			if equalViews(got, views[j]) {
				matched = j
			}
		}
		require.GreaterOrEqual(t, matched, 0,
			"crash point %d (durable through step %d, step %d in flight): recovered %+v", k, point.lastDurable, point.inFlight, got)
		checkHardStateConsistent(t, recovered)
		require.NoError(t, recovered.Close())
	}
}

func equalViews(a, b view) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func checkHardStateConsistent(t testing.TB, s *Store) {
	t.Helper()
	hs, _, err := s.InitialState()
	require.NoError(t, err)
	last, _ := s.LastIndex()
	snap, _ := s.Snapshot()
	require.LessOrEqual(t, hs.GetCommit(), max(last, snap.GetMetadata().GetIndex()), "commit beyond the log")
	if last > 0 {
		lastTerm, err := s.Term(last)
		require.NoError(t, err)
		require.LessOrEqual(t, lastTerm, max(hs.GetTerm(), lastTerm))
	}
}

// TestMemDiskCrashAtEveryWrite runs the same check on the simulator's disk:
// a crash after every write, with and without a torn tail.
func TestMemDiskCrashAtEveryWrite(t *testing.T) {
	steps := crashWorkload()
	for stop := 1; stop <= len(steps); stop++ {
		for _, torn := range []int{0, 7} {
			d := NewDisk()
			s, err := OpenMem(d)
			require.NoError(t, err)
			views := runWorkload(t, s, steps[:stop], func(int) {})
			lastDurable := 0
			for i := range steps[:stop] {
				if steps[i].synced {
					lastDurable = i + 1
				}
			}
			d.Crash(torn)
			require.Error(t, s.Save(Update{HardState: hardState(99, 1, 0), MustSync: true}), "a store outlives its crash")
			recovered, err := OpenMem(d)
			require.NoError(t, err)
			got := observe(t, recovered)
			matched := false
			for j := lastDurable; j <= stop; j++ {
				matched = matched || equalViews(got, views[j])
			}
			require.True(t, matched, "crash after step %d (durable through %d), torn %d: %+v", stop, lastDurable, torn, got)
			checkHardStateConsistent(t, recovered)
		}
	}
}

// TestMemDiskFailedSync: a failed fsync is an error, the store then refuses
// every write, and a crash-restart recovers the durable state.
func TestMemDiskFailedSync(t *testing.T) {
	d := NewDisk()
	s, err := OpenMem(d)
	require.NoError(t, err)
	require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 1), Entries: ents(1, 1, 1), MustSync: true}))
	d.FailSyncs = 1
	err = s.Save(Update{Entries: ents(3, 1), MustSync: true})
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, err, ErrInjectedSync)
	require.ErrorIs(t, s.Save(Update{Entries: ents(3, 1), MustSync: true}), ErrFailed, "never retry a failed fsync")
	_, err = s.CreateSnapshot(1, confState(1), nil)
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, s.Compact(1), ErrFailed)

	d.Crash(0)
	s, err = OpenMem(d)
	require.NoError(t, err)
	requireBounds(t, s, 1, 2)
	require.Equal(t, 1, d.FailedSyncs)
}

// TestMemDiskCorruptionIsDetected: a flipped bit in any stored record turns
// its read into ErrCorrupt; the bad bytes are never served.
func TestMemDiskCorruptionIsDetected(t *testing.T) {
	for n := 0; n < 8; n++ {
		d := NewDisk()
		s, err := OpenMem(d)
		require.NoError(t, err)
		require.NoError(t, s.Save(Update{HardState: hardState(2, 1, 3), Entries: ents(1, 1, 1, 2), MustSync: true}))
		_, err = s.CreateSnapshot(2, confState(1), []byte("state@2"))
		require.NoError(t, err)
		key := d.Corrupt(n, 3*n+1)
		require.NotNil(t, key)
		d.Crash(0)
		_, err = OpenMem(d)
		require.ErrorIs(t, err, ErrCorrupt, "corrupted %q", key)
	}
	// Corruption of an entry read after open (it fell out of the cache).
	d := NewDisk()
	s, err := OpenMem(d)
	require.NoError(t, err)
	s.cacheEntriesMax = 2
	require.NoError(t, s.Save(Update{Entries: ents(1, 1, 1, 1, 1, 1, 1), MustSync: true}))
	d.Corrupt(0, 5) // the first log key in key order after the metadata keys
	keys := sortedKeys(d.visible, string(logPrefix), string(logEnd))
	d.corrupt = map[string]int{keys[0]: 5}
	_, err = s.Entries(1, 3, ^uint64(0))
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = s.Term(1)
	require.ErrorIs(t, err, ErrCorrupt)
	// Rewriting the record heals it.
	require.NoError(t, s.Save(Update{Entries: ents(1, 2), MustSync: true}))
	requireEntries(t, s, 1, 2, ents(1, 2))
}

// TestPebbleInjectedErrors: write and sync errors from the file system
// surface from Save (none swallowed) and the store refuses further writes.
func TestPebbleInjectedErrors(t *testing.T) {
	for _, kind := range []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileSync, errorfs.OpFileSyncData} {
		t.Run(map[errorfs.OpKind]string{errorfs.OpFileWrite: "write", errorfs.OpFileSync: "sync", errorfs.OpFileSyncData: "syncdata"}[kind], func(t *testing.T) {
			var armed sync.Mutex
			on := false
			mem := vfs.NewMem()
			fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
				armed.Lock()
				defer armed.Unlock()
				if on && (op.Kind == kind || (kind == errorfs.OpFileSync && op.Kind == errorfs.OpFileSyncData) ||
					(kind == errorfs.OpFileSyncData && op.Kind == errorfs.OpFileSync)) {
					return errorfs.ErrInjected
				}
				return nil
			}))
			s, err := OpenPebble("db", fs)
			require.NoError(t, err)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 1), Entries: ents(1, 1), MustSync: true}))
			armed.Lock()
			on = true
			armed.Unlock()
			err = s.Save(Update{HardState: hardState(1, 1, 2), Entries: ents(2, 1), MustSync: true})
			require.Error(t, err, "an injected %v must surface", kind)
			t.Logf("injected %v: %v", kind, err)
			require.ErrorIs(t, err, ErrFailed)
			require.ErrorIs(t, s.Save(Update{Entries: ents(3, 1), MustSync: true}), ErrFailed, "never retry after a failed write")
			last, _ := s.LastIndex()
			require.EqualValues(t, 1, last, "memory does not run ahead of a failed write")
		})
	}
}

// TestMemDiskRandomCrashes drives random updates with random crashes and
// torn tails, and checks every recovery against the durable history.
func TestMemDiskRandomCrashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d := NewDisk()
	s, err := OpenMem(d)
	require.NoError(t, err)
	durable := observe(t, s)
	term := uint64(1)
	for i := 0; i < 300; i++ {
		last, _ := s.LastIndex()
		first, _ := s.FirstIndex()
		switch rng.IntN(10) {
		case 0:
			d.Crash(rng.IntN(12))
			s, err = OpenMem(d)
			require.NoError(t, err)
			require.True(t, equalViews(durable, observe(t, s)), "step %d: recovered state is not the durable one", i)
			continue
		case 1:
			term++
		case 2:
			if snap, _ := s.Snapshot(); last > snap.GetMetadata().GetIndex() {
				_, err := s.CreateSnapshot(last, confState(1), []byte(fmt.Sprint("state@", last)))
				require.NoError(t, err)
				require.NoError(t, s.Compact(last-uint64(rng.IntN(int(last-first+1)))))
				durable = observe(t, s)
				continue
			}
		}
		start := last + 1
		if last >= first && rng.IntN(4) == 0 {
			start = last - uint64(rng.IntN(int(last-first+1)))
		}
		entries := make([]*raftpb.Entry, rng.IntN(4)+1)
		for j := range entries {
			entries[j] = ent(start+uint64(j), term)
		}
		sync := rng.IntN(3) > 0
		require.NoError(t, s.Save(Update{HardState: hardState(term, 1, start-1), Entries: entries, MustSync: sync}))
		if sync {
			durable = observe(t, s)
		}
	}
	require.Positive(t, d.Crashes)
}

// TestSnapshotFromLeaderIsAlwaysSynced: Raft's MustSync is false for a
// Ready that only installs a snapshot, but the snapshot's index is
// acknowledged at once, so a crash must not lose it.
func TestSnapshotFromLeaderIsAlwaysSynced(t *testing.T) {
	d := NewDisk()
	s, err := OpenMem(d)
	require.NoError(t, err)
	received := &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(75)), Term: new(uint64(3)), ConfState: confState(1, 2, 3)},
		Data:     []byte("state@75"),
	}
	require.NoError(t, s.Save(Update{HardState: hardState(3, 0, 75), Snapshot: received, MustSync: false}))
	d.Crash(0)
	s, err = OpenMem(d)
	require.NoError(t, err)
	requireBounds(t, s, 76, 75)
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.EqualValues(t, 75, snap.GetMetadata().GetIndex())
}
