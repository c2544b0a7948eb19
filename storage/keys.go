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
	// keySnapshotData held a snapshot's data whole, before chunks; it is
	// still read, and deleted by the next snapshot stored.
	keySnapshotData = []byte("\x01snapshot/data")
	// Chunk keys are the prefix, the snapshot's index and the chunk's
	// sequence number, both big-endian.
	snapshotChunkPrefix = []byte("\x01snapshot/chunk/")
	snapshotChunkEnd    = []byte("\x01snapshot/chunk0") // '0' follows '/'

	keyTruncated = []byte("\x01truncated")
	keyIdentity  = []byte("\x01identity")
	logPrefix    = []byte("\x02log/")
	logEnd       = []byte("\x02log0") // '0' follows '/': just past every log key
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

func snapshotChunkKey(index uint64, seq uint32) []byte {
	key := make([]byte, 0, len(snapshotChunkPrefix)+12)
	key = append(key, snapshotChunkPrefix...)
	key = binary.BigEndian.AppendUint64(key, index)
	return binary.BigEndian.AppendUint32(key, seq)
}

// snapshotChunkBytes bounds a chunk of snapshot data: each is written as a
// batch of its own when a snapshot is staged, so the writes of the
// controller's loop queue behind at most one chunk in the engine's log.
const snapshotChunkBytes = 1 << 20

// snapshotChunks splits a snapshot's data into sealed chunk records under
// index. The first chunk starts with the data's length, so a chunk lost
// from the end is detected.
func snapshotChunks(index uint64, data []byte) []op {
	payload := binary.AppendUvarint(nil, uint64(len(data)))
	var ops []op
	for seq := uint32(0); ; seq++ {
		take := min(snapshotChunkBytes-len(payload), len(data))
		payload = append(payload, data[:take]...)
		data = data[take:]
		key := snapshotChunkKey(index, seq)
		ops = append(ops, op{kind: opPut, key: key, value: seal(key, payload)})
		if len(data) == 0 {
			return ops
		}
		payload = nil
	}
}
