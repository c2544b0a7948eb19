package storage

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// OpenPebble opens (creating if needed) the store in dir on fs: vfs.Default
// in production, vfs.NewCrashableMem() or an errorfs wrapper in tests.
func OpenPebble(dir string, fs vfs.FS) (*Store, error) {
	opts := &pebble.Options{
		FS:                 fs,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{},
		// A metadata log is small; the defaults are sized for bulk data.
		MemTableSize: 16 << 20,
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: opening pebble in %s: %w", dir, err)
	}
	return open(&pebbleEngine{db: db})
}

// pebbleLogger keeps Pebble's informational chatter out of the service's
// logs and turns its fatal errors into panics with a pebbleFatal value.
// Pebble reports a failed WAL write or sync this way, from the committing
// goroutine: write recovers it into an error, which poisons the Store. A
// fatal error on a background goroutine crashes the process, which is the
// recovery path for any storage failure anyway.
type pebbleLogger struct{}

type pebbleFatal struct{ message string }

func (pebbleLogger) Infof(string, ...any)  {}
func (pebbleLogger) Errorf(string, ...any) {}
func (pebbleLogger) Fatalf(format string, args ...any) {
	panic(pebbleFatal{message: fmt.Sprintf(format, args...)})
}

type pebbleEngine struct{ db *pebble.DB }

func (e *pebbleEngine) get(key []byte) ([]byte, error) {
	value, closer, err := e.db.Get(key)
	if err == pebble.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), value...)
	return out, closer.Close()
}

func (e *pebbleEngine) scan(lo, hi []byte, visit func(key, value []byte) error) error {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		value, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		if err := visit(it.Key(), value); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

func (e *pebbleEngine) write(b *batch, sync bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fatal, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("storage: pebble: %s", fatal.message)
		}
	}()
	pb := e.db.NewBatch()
	defer pb.Close()
	for _, o := range b.ops {
		var err error
		switch o.kind {
		case opPut:
			err = pb.Set(o.key, o.value, nil)
		case opDeleteRange:
			err = pb.DeleteRange(o.key, o.end, nil)
		}
		if err != nil {
			return err
		}
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	return pb.Commit(opts)
}

func (e *pebbleEngine) close() error { return e.db.Close() }
