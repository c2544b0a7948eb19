package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Key scheme. Metadata keys sort before log keys; log keys are the prefix
// followed by the big-endian index, so index order is key order.
var (
	keyHardState    = []byte("\x01hardstate")
	keySnapshotMeta = []byte("\x01snapshot/meta")
	// keySnapshotData held a snapshot's data, before snapshot blobs; it is
	// still read, and deleted by the next snapshot stored.
	keySnapshotData = []byte("\x01snapshot/data")
	keyTruncated    = []byte("\x01truncated")
	keyIdentity     = []byte("\x01identity")
	logPrefix       = []byte("\x02log/")
	logEnd          = []byte("\x02log0") // '0' follows '/': just past every log key
)

func logKey(index uint64) []byte {
	key := make([]byte, len(logPrefix)+8)
	copy(key, logPrefix)
	binary.BigEndian.PutUint64(key[len(logPrefix):], index)
	return key
}

func indexOfLogKey(key []byte) (uint64, error) {
	if len(key) != len(logPrefix)+8 || !bytes.HasPrefix(key, logPrefix) {
		return 0, fmt.Errorf("%w: malformed log key %x", ErrCorrupt, key)
	}
	return binary.BigEndian.Uint64(key[len(logPrefix):]), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal appends the CRC-32C of key and payload. Covering the key detects a
// record that landed under the wrong key as well as flipped bits.
func seal(key, payload []byte) []byte {
	sum := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, payload)
	return binary.LittleEndian.AppendUint32(append([]byte(nil), payload...), sum)
}

// unseal verifies and strips the checksum.
func unseal(key, value []byte) ([]byte, error) {
	if len(value) < 4 {
		return nil, fmt.Errorf("%w: %d-byte record under %q", ErrCorrupt, len(value), key)
	}
	payload := value[:len(value)-4]
	want := binary.LittleEndian.Uint32(value[len(value)-4:])
	if crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, payload) != want {
		return nil, fmt.Errorf("%w: checksum mismatch under %q", ErrCorrupt, key)
	}
	return payload, nil
}

// snapshotBlob names the blob of the snapshot at index; its content is the
// data and the CRC-32C of the name and the data.
func snapshotBlob(index uint64) string { return fmt.Sprintf("snapshot-%016x.snap", index) }

// snapshotBlobPiece bounds what the Pebble engine writes of a blob before
// it syncs: the dirty pages a sync of the log may be made to wait for.
const snapshotBlobPiece = 1 << 20
