package storage

import (
	"fmt"
	"io"
	"slices"

	"github.com/cockroachdb/errors/oserror"
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
	e := &pebbleEngine{db: db, fs: fs, blobs: fs.PathJoin(dir, "snapshots")}
	// NB: the directory's own entry is synced too, or a crash could lose
	// the directory with every snapshot in it.
	if err := fs.MkdirAll(e.blobs, 0o755); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: creating %s: %w", e.blobs, err)
	}
	if err := syncDir(fs, dir); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: syncing %s: %w", dir, err)
	}
	return open(e)
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

// pebbleEngine keeps the log in Pebble and blobs as files of their own in
// the blobs directory beside Pebble's.
type pebbleEngine struct {
	db    *pebble.DB
	fs    vfs.FS
	blobs string
}

// putBlob writes a temporary file in pieces of snapshotBlobPiece, starting
// the writeback of each as the next is written (SyncTo: no more than a
// piece is dirty when another file's fsync forces a journal commit, and no
// device flush per piece), syncs it, renames it over the blob and syncs
// the directory.
func (e *pebbleEngine) putBlob(name string, parts ...[]byte) (err error) {
	path := e.fs.PathJoin(e.blobs, name)
	temporary := path + ".tmp"
	f, err := e.fs.Create(temporary, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = e.fs.Remove(temporary)
		}
	}()
	// NB: a vfs.File may modify what it is given to write (Pebble's
	// in-memory one does under invariants): the caller's data is copied
	// into a scratch piece first.
	scratch := make([]byte, 0, snapshotBlobPiece)
	written := int64(0)
	for _, part := range parts {
		for len(part) > 0 {
			piece := append(scratch[:0], part[:min(len(part), snapshotBlobPiece)]...)
			part = part[len(piece):]
			if _, err := f.Write(piece); err != nil {
				return err
			}
			written += int64(len(piece))
			if _, err := f.SyncTo(written); err != nil {
				return err
			}
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := e.fs.Rename(temporary, path); err != nil {
		return err
	}
	return syncDir(e.fs, e.blobs)
}

func syncDir(fs vfs.FS, path string) error {
	dir, err := fs.OpenDir(path)
	if err != nil {
		return err
	}
	if err := dir.Sync(); err != nil {
		_ = dir.Close()
		return err
	}
	return dir.Close()
}

func (e *pebbleEngine) getBlob(name string) ([]byte, error) {
	f, err := e.fs.Open(e.fs.PathJoin(e.blobs, name))
	if oserror.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func (e *pebbleEngine) blobNames() ([]string, error) {
	names, err := e.fs.List(e.blobs)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func (e *pebbleEngine) deleteBlob(name string) error {
	err := e.fs.Remove(e.fs.PathJoin(e.blobs, name))
	if oserror.IsNotExist(err) {
		return nil
	}
	return err
}

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
