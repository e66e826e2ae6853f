package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/IBM/sarama"
	"github.com/klauspost/compress/gzip"
	snappy "github.com/klauspost/compress/snappy/xerial"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// The at-least-once producer writes its produce requests (versions 3 to 8)
// and reads their responses itself, on connections sarama opened and
// authenticated (link.go). sarama's encoder makes two passes over a request
// through interfaces, allocating a field object for every length and CRC
// and 49 objects for a one-record request, and decodes the response into
// maps; at a hundred events a second that was an eighth of the relay's CPU,
// and its garbage more. Here a request is appended to a buffer the
// connection reuses, its batches' lengths and CRCs filled in afterwards,
// and a response is read into the request's own per-partition errors.
//
// The formats are Kafka's: https://kafka.apache.org/protocol (Produce,
// RecordBatch). The tests decode what is written here with franz-go's kmsg,
// an implementation independent of this one and of sarama's.

const (
	apiProduce = 0
	batchMagic = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// wireBatch is one partition's records in a request.
type wireBatch struct {
	topic     string
	partition int32
	records   []*record
}

// encoder appends produce requests to a buffer it keeps between requests.
type encoder struct {
	clientID string
	codec    sarama.CompressionCodec
	level    int
	buf      []byte
	scratch  []byte // uncompressed records of a compressed batch
}

// request encodes a produce request of batches and returns the bytes to
// write, valid until the next call. Batches of a topic go together, topics
// in the order they first appear.
func (e *encoder) request(version int16, corr int32, timeout int32, batches []wireBatch) ([]byte, error) {
	b := e.buf[:0]
	b = append(b, 0, 0, 0, 0) // size, filled in below
	b = binary.BigEndian.AppendUint16(b, apiProduce)
	b = binary.BigEndian.AppendUint16(b, uint16(version)) //nolint:gosec // G115: 3 to 8
	b = binary.BigEndian.AppendUint32(b, uint32(corr))    //nolint:gosec // G115: the bits are what is sent
	b = appendString(b, e.clientID)
	b = binary.BigEndian.AppendUint16(b, 0xffff)          // transactional id: null
	b = binary.BigEndian.AppendUint16(b, 0xffff)          // acks: all (-1)
	b = binary.BigEndian.AppendUint32(b, uint32(timeout)) //nolint:gosec // G115: as corr
	topics := 0
	for i := range batches {
		if firstOfTopic(batches, i) {
			topics++
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(topics))
	var err error
	for i := range batches {
		if !firstOfTopic(batches, i) {
			continue
		}
		topic := batches[i].topic
		n := 0
		for _, wb := range batches[i:] {
			if wb.topic == topic {
				n++
			}
		}
		b = appendString(b, topic)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		for _, wb := range batches[i:] {
			if wb.topic != topic {
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(wb.partition)) //nolint:gosec // G115: as corr
			at := len(b)
			b = append(b, 0, 0, 0, 0) // the batch's size
			if b, err = e.batch(b, wb.records); err != nil {
				return nil, err
			}
			binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4)) //nolint:gosec // G115: bounded by maxRequestBytes
		}
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4)) //nolint:gosec // G115: as above
	e.buf = b
	return b, nil
}

// firstOfTopic reports whether batches[i] is its topic's first. A request
// carries a few partitions, so looking back is cheaper than a map.
func firstOfTopic(batches []wireBatch, i int) bool {
	for _, wb := range batches[:i] {
		if wb.topic == batches[i].topic {
			return false
		}
	}
	return true
}

// batch appends a v2 record batch of rs.
func (e *encoder) batch(b []byte, rs []*record) ([]byte, error) {
	first, maxTS := rs[0].ts.UnixMilli(), rs[0].ts.UnixMilli()
	for _, r := range rs[1:] {
		maxTS = max(maxTS, r.ts.UnixMilli())
	}
	start := len(b)
	b = binary.BigEndian.AppendUint64(b, 0)          // base offset: the broker assigns it
	b = append(b, 0, 0, 0, 0)                        // batch length, filled in below
	b = binary.BigEndian.AppendUint32(b, 0xffffffff) // partition leader epoch: none (-1), as the Java client sends
	b = append(b, batchMagic)
	crcAt := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(e.codec&0x7)) // attributes: the codec; create time, not transactional
	b = binary.BigEndian.AppendUint32(b, uint32(len(rs)-1))   //nolint:gosec // G115: bounded by the batch size
	b = binary.BigEndian.AppendUint64(b, uint64(first))
	b = binary.BigEndian.AppendUint64(b, uint64(maxTS))
	b = binary.BigEndian.AppendUint64(b, 0xffffffffffffffff) // producer id: none
	b = binary.BigEndian.AppendUint16(b, 0xffff)             // producer epoch
	b = binary.BigEndian.AppendUint32(b, 0xffffffff)         // base sequence
	b = binary.BigEndian.AppendUint32(b, uint32(len(rs)))    //nolint:gosec // G115: as above
	if e.codec == sarama.CompressionNone {
		for i, r := range rs {
			b = appendRecord(b, r, int64(i), r.ts.UnixMilli()-first)
		}
	} else {
		raw := e.scratch[:0]
		for i, r := range rs {
			raw = appendRecord(raw, r, int64(i), r.ts.UnixMilli()-first)
		}
		e.scratch = raw
		var err error
		if b, err = compress(b, e.codec, e.level, raw); err != nil {
			return nil, err
		}
	}
	binary.BigEndian.PutUint32(b[start+8:], uint32(len(b)-start-12)) //nolint:gosec // G115: bounded
	binary.BigEndian.PutUint32(b[crcAt:], crc32.Checksum(b[crcAt+4:], castagnoli))
	return b, nil
}

// appendRecord appends r's event as a v2 record.
func appendRecord(b []byte, r *record, offsetDelta, tsDelta int64) []byte {
	ev := r.ev
	n := 1 + varintLen(tsDelta) + varintLen(offsetDelta) + bytesLen(ev.Key) + bytesLen(ev.Value) + varintLen(int64(len(ev.Headers)))
	for _, h := range ev.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	b = binary.AppendVarint(b, int64(n))
	b = append(b, 0) // attributes
	b = binary.AppendVarint(b, tsDelta)
	b = binary.AppendVarint(b, offsetDelta)
	b = appendBytes(b, ev.Key)
	b = appendBytes(b, ev.Value)
	b = binary.AppendVarint(b, int64(len(ev.Headers)))
	for _, h := range ev.Headers {
		b = binary.AppendVarint(b, int64(len(h.Key)))
		b = append(b, h.Key...)
		b = appendBytes(b, h.Value)
	}
	return b
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63) //nolint:gosec // G115: zigzag encoding
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

// bytesLen is the encoded size of a varint-prefixed byte string, null (-1)
// for nil.
func bytesLen(p []byte) int {
	if p == nil {
		return varintLen(-1)
	}
	return varintLen(int64(len(p))) + len(p)
}

func appendBytes(b, p []byte) []byte {
	if p == nil {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(p)))
	return append(b, p...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s))) //nolint:gosec // G115: topic names and client ids are short
	return append(b, s...)
}

// Compression as sarama does it, with the same libraries and settings, so
// that kafka.compression means what it meant with sarama's encoder.
var (
	gzipWriters sync.Map // level -> *sync.Pool of *gzip.Writer
	lz4Writers  = sync.Pool{New: func() any {
		w := lz4.NewWriter(nil)
		_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
		return w
	}}
	zstdEncoders sync.Map // level -> *zstd.Encoder (EncodeAll is safe for concurrent use)
)

// compress appends raw compressed with codec to b.
func compress(b []byte, codec sarama.CompressionCodec, level int, raw []byte) ([]byte, error) {
	switch codec {
	case sarama.CompressionGZIP:
		if level == sarama.CompressionLevelDefault {
			level = gzip.DefaultCompression
		}
		pool, _ := gzipWriters.LoadOrStore(level, &sync.Pool{})
		w, _ := pool.(*sync.Pool).Get().(*gzip.Writer)
		buf := bytes.NewBuffer(b)
		if w == nil {
			var err error
			if w, err = gzip.NewWriterLevel(buf, level); err != nil {
				return nil, err
			}
		} else {
			w.Reset(buf)
		}
		defer pool.(*sync.Pool).Put(w)
		return writeAll(w, buf, raw)
	case sarama.CompressionSnappy:
		return append(b, snappy.Encode(nil, raw)...), nil
	case sarama.CompressionLZ4:
		w := lz4Writers.Get().(*lz4.Writer)
		defer lz4Writers.Put(w)
		buf := bytes.NewBuffer(b)
		w.Reset(buf)
		return writeAll(w, buf, raw)
	case sarama.CompressionZSTD:
		enc, ok := zstdEncoders.Load(level)
		if !ok {
			speed := zstd.SpeedDefault
			if level != sarama.CompressionLevelDefault {
				speed = zstd.EncoderLevelFromZstd(level)
			}
			e, err := zstd.NewWriter(nil, zstd.WithZeroFrames(true), zstd.WithEncoderLevel(speed), zstd.WithEncoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			enc, _ = zstdEncoders.LoadOrStore(level, e)
		}
		return enc.(*zstd.Encoder).EncodeAll(raw, b), nil
	}
	return nil, fmt.Errorf("unsupported compression codec %d", codec)
}

// writeAll compresses raw through w, which writes to buf, and returns buf's
// bytes once w is closed.
func writeAll(w io.WriteCloser, buf *bytes.Buffer, raw []byte) ([]byte, error) {
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// errShortResponse is a produce response that ends before its fields do.
var errShortResponse = errors.New("kafka produce response is truncated")

// readResponse reads the body of r's produce response (after the size and
// correlation id): r.errs[i] becomes the outcome of r.batches[i] (nil, a
// sarama.KError, or sarama.ErrIncompleteResponse for a batch the response
// does not mention), r.offsets[i] its base offset when r.offsets is set, and
// r.throttle the time the broker asks the next request to wait.
func (r *request) readResponse(body []byte) error {
	for i := range r.errs {
		r.errs[i] = sarama.ErrIncompleteResponse
	}
	d := wireReader{b: body}
	for nt := d.count(); nt > 0 && d.err == nil; nt-- {
		topic := d.string()
		for np := d.count(); np > 0 && d.err == nil; np-- {
			partition := int32(d.uint32()) //nolint:gosec // G115: the bits as sent
			code := int16(d.uint16())      //nolint:gosec // G115: as above
			offset := int64(d.uint64())    //nolint:gosec // G115: as above
			d.skip(8)                      // log append time (v2+)
			if r.version >= 5 {
				d.skip(8) // log start offset
			}
			if r.version >= 8 {
				for ne := d.count(); ne > 0 && d.err == nil; ne-- {
					d.skip(4) // batch index
					d.string()
				}
				d.string() // error message
			}
			for i, wb := range r.batches {
				if wb.partition != partition || string(topic) != wb.topic {
					continue
				}
				r.errs[i] = nil
				if code != 0 {
					r.errs[i] = sarama.KError(code)
				}
				if r.offsets != nil {
					r.offsets[i] = offset
				}
			}
		}
	}
	r.throttle = int32(d.uint32()) //nolint:gosec // G115: as above
	return d.err
}

// wireReader reads big-endian fields, remembering the first overrun.
type wireReader struct {
	b   []byte
	err error
}

func (d *wireReader) take(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.err = errShortResponse
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *wireReader) skip(n int) { d.take(n) }

func (d *wireReader) uint16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *wireReader) uint64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *wireReader) uint32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

// count is an array's length; null (-1) is empty.
func (d *wireReader) count() int {
	n := int32(d.uint32()) //nolint:gosec // G115: as sent
	return max(int(n), 0)
}

// string is a nullable string's bytes, valid while body is.
func (d *wireReader) string() []byte {
	n := int16(d.uint16()) //nolint:gosec // G115: as sent
	if n < 0 {
		return nil
	}
	return d.take(int(n))
}
