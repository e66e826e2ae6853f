package sink

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/relay-dev/relay/pkg/decode"
)

// item carries an event through the transactional producer (sarama's
// AsyncProducer). Embedding the message in one struct
// with the event means one allocation per record, and Metadata points back to it
// without boxing.
type item struct {
	msg  sarama.ProducerMessage
	ev   *decode.Event
	sent time.Time
	// Storage the message points into, so building a record allocates the
	// item alone in the common case (no boxed encoders, no header slice).
	key, value sarama.ByteEncoder
	headers    [4]sarama.RecordHeader
}

// newItem builds the producer message for ev.
func newItem(ev *decode.Event, now time.Time) *item {
	it := &item{ev: ev, sent: now}
	it.msg = sarama.ProducerMessage{
		Topic:     ev.Topic,
		Timestamp: ev.Timestamp,
		Metadata:  it,
	}
	if ev.Key != nil {
		it.key = ev.Key
		it.msg.Key = &it.key
	}
	if ev.Value != nil {
		it.value = ev.Value
		it.msg.Value = &it.value
	}
	if n := len(ev.Headers); n > 0 {
		hs := it.headers[:0]
		if n > len(it.headers) {
			hs = make([]sarama.RecordHeader, 0, n)
		}
		for _, h := range ev.Headers {
			hs = append(hs, sarama.RecordHeader{Key: headerKey(h.Key), Value: h.Value})
		}
		it.msg.Headers = hs
	}
	return it
}

// explicitOr honours an explicit partition (from partition_column), marked by
// a non-negative msg.Partition, and otherwise defers to the given partitioner.
func explicitOr(next sarama.PartitionerConstructor) sarama.PartitionerConstructor {
	return func(topic string) sarama.Partitioner {
		return explicitPartitioner{next: next(topic)}
	}
}

type explicitPartitioner struct{ next sarama.Partitioner }

func (p explicitPartitioner) Partition(msg *sarama.ProducerMessage, n int32) (int32, error) {
	if it, ok := msg.Metadata.(*item); ok && it.ev.Partition >= 0 {
		if it.ev.Partition >= n {
			return 0, fmt.Errorf("event %s of %s: partition_column value %d but topic %s has %d partitions: %w",
				it.ev.ID, it.ev.Table, it.ev.Partition, msg.Topic, n, errPartitionRange)
		}
		return it.ev.Partition, nil
	}
	if _, ok := msg.Metadata.(progressMsg); ok {
		return 0, nil // the progress store reads partition 0 only
	}
	return p.next.Partition(msg, n)
}

func (p explicitPartitioner) RequiresConsistency() bool { return true }

// headerKeys caches header names as bytes, so a record's headers cost no
// conversion per event. Names come from the config and from logical-message
// envelopes (chosen by services), hence the cap.
var (
	headerKeys     sync.Map // string -> []byte
	headerKeyCount atomic.Int32
)

const maxHeaderKeys = 1024

var idKey, typeKey = []byte("id"), []byte("type")

func headerKey(k string) []byte {
	switch k { // every event carries these two
	case "id":
		return idKey
	case "type":
		return typeKey
	}
	if b, ok := headerKeys.Load(k); ok {
		return b.([]byte)
	}
	b := []byte(k)
	if headerKeyCount.Load() < maxHeaderKeys {
		if _, loaded := headerKeys.LoadOrStore(k, b); !loaded {
			headerKeyCount.Add(1)
		}
	}
	return b
}
