package storage

// engine is the ordered key-value store under a Store: Pebble in
// production, a simulated disk in the simulator. Keys sort bytewise.
type engine interface {
	// get returns a copy of the value, or nil and no error if absent.
	get(key []byte) ([]byte, error)
	// scan calls visit for each key in [lo, hi), ascending. The slices
	// are only valid during the call.
	scan(lo, hi []byte, visit func(key, value []byte) error) error
	// write applies the batch atomically, durably if sync.
	write(b *batch, sync bool) error
	// putBlob stores parts, concatenated, as the named blob, durably, once
	// whole: a crash leaves the blob as it was or as written, never a
	// part. It may run beside the other methods. Blobs hold snapshots,
	// outside the log, so that megabytes never queue in front of a sync
	// of the log's (each piece of a blob is synced as it is written).
	putBlob(name string, parts ...[]byte) error
	// getBlob returns a copy of the blob, or nil and no error if absent.
	getBlob(name string) ([]byte, error)
	// blobNames lists the blobs, sorted.
	blobNames() ([]string, error)
	// deleteBlob removes a blob; removing none is no error.
	deleteBlob(name string) error
	close() error
}

type opKind uint8

const (
	opPut opKind = iota + 1
	opDeleteRange
)

type op struct {
	kind  opKind
	key   []byte
	end   []byte // opDeleteRange: exclusive upper bound
	value []byte
}

type batch struct{ ops []op }

func (b *batch) put(key, value []byte) {
	b.ops = append(b.ops, op{kind: opPut, key: key, value: value})
}
func (b *batch) deleteRange(lo, hi []byte) {
	b.ops = append(b.ops, op{kind: opDeleteRange, key: lo, end: hi})
}
func (b *batch) empty() bool { return len(b.ops) == 0 }
