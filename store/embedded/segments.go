package embedded

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Large values are kept as short segments. bbolt never splits a leaf of four
// entries or fewer, so a value of tens of kilobytes shares its leaf with up
// to three neighbours, and every later insert into that leaf rewrites all of
// them: storing 44 KB messages whole wrote about six times their size. With
// values no longer than segmentSize, two fit a 4 KB page and an insert
// rewrites one page, not a neighbour's whole message.
//
// A segmented value is its first segment under key, starting with
// segmentedFormat and the value's total length, then continuations under key
// ‖ uint16 index (1, 2, …), which sort right after key and before the next
// record's key. Records always start with their format version (1 to 127), so
// a value stored whole, as older files have them, still reads.
const (
	segmentSize     = 1900
	segmentedFormat = 0x80
	// maxSegments bounds one value: 65,535 × 1,900 bytes is about 124 MB,
	// over any record a message can produce (bodies come from at most
	// milter.max_message_size of mail).
	maxSegments = 1<<16 - 1
)

func segmentKey(key []byte, i int) []byte {
	return binary.BigEndian.AppendUint16(append(make([]byte, 0, len(key)+2), key...), uint16(i))
}

// putSegmented stores val under key, segmented when it is long, replacing
// any previous value (and its segments) there.
func putSegmented(b *bolt.Bucket, key, val []byte) error {
	if err := deleteSegmented(b, key); err != nil {
		return err
	}
	if len(val) <= segmentSize {
		return b.Put(key, val)
	}
	head := binary.AppendUvarint([]byte{segmentedFormat}, uint64(len(val)))
	first := segmentSize - len(head)
	if n := 1 + (len(val)-first+segmentSize-1)/segmentSize; n > maxSegments+1 {
		return fmt.Errorf("value of %d bytes is too large to store", len(val))
	}
	// Segments are appended in key order: pack pages full rather than half
	// (bbolt's default, for random inserts).
	b.FillPercent = 0.95
	if err := b.Put(key, append(head, val[:first]...)); err != nil {
		return err
	}
	for i, off := 1, first; off < len(val); i, off = i+1, off+segmentSize {
		if err := b.Put(segmentKey(key, i), val[off:min(off+segmentSize, len(val))]); err != nil {
			return err
		}
	}
	return nil
}

// getSegmented returns the value under key, nil when there is none. A value
// stored whole is returned as bbolt's slice (valid for the transaction), a
// segmented one as a new copy.
func getSegmented(b *bolt.Bucket, key []byte) ([]byte, error) {
	v := b.Get(key)
	if len(v) == 0 || v[0] != segmentedFormat {
		return v, nil
	}
	size, n := binary.Uvarint(v[1:])
	if n <= 0 || size > maxSegments*segmentSize+segmentSize {
		return nil, fmt.Errorf("key %x: corrupt segmented value header", key)
	}
	out := make([]byte, 0, size)
	out = append(out, v[1+n:]...)
	for i := 1; uint64(len(out)) < size; i++ {
		seg := b.Get(segmentKey(key, i))
		if len(seg) == 0 || uint64(len(out)+len(seg)) > size {
			return nil, fmt.Errorf("key %x: segment %d missing or too long", key, i)
		}
		out = append(out, seg...)
	}
	return out, nil
}

// deleteSegmented deletes the value under key and its segments.
func deleteSegmented(b *bolt.Bucket, key []byte) error {
	v := b.Get(key)
	if len(v) > 0 && v[0] == segmentedFormat {
		for i := 1; i <= maxSegments; i++ {
			sk := segmentKey(key, i)
			if b.Get(sk) == nil {
				break
			}
			if err := b.Delete(sk); err != nil {
				return err
			}
		}
	}
	if v == nil {
		return nil
	}
	return b.Delete(key)
}
