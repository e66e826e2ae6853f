package sink

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// DeadLetterObserver is implemented by observers that count events routed to
// the dead letter topic. It is optional so that observers without it (tests,
// older metrics) keep working.
type DeadLetterObserver interface {
	DeadLettered(table string)
}

// Headers of a dead letter record. The original record's own headers are left
// out: they may be what made it too large.
const (
	dlHeaderID            = "id"
	dlHeaderType          = "type"
	dlHeaderTable         = "table"
	dlHeaderOriginalTopic = "original-topic"
	dlHeaderError         = "error"
)

// oversize applies kafka.oversized to events too large for
// kafka.max_message_bytes. Checking here rather than leaving it to sarama
// matters: sarama reports the record as a ConfigurationError, which looks
// retryable, and the pipeline would restart onto the same event forever.
type oversize struct {
	max   int
	topic string // dead letter topic; "" stops the relay instead
	obs   DeadLetterObserver
	log   zerolog.Logger
}

func newOversize(k config.Kafka, obs Observer, log zerolog.Logger) *oversize {
	o := &oversize{max: k.MaxMessageBytes, log: log}
	if k.Oversized == config.OversizedDeadLetter {
		o.topic = k.DeadLetterTopic
	}
	if d, ok := obs.(DeadLetterObserver); ok {
		o.obs = d
	}
	return o
}

// check returns ev when it fits; otherwise, by policy, a small record for
// the dead letter topic that stands in for ev (same sequence number, so its
// ack confirms ev), or a fatal error naming the event.
func (o *oversize) check(ev *decode.Event) (*decode.Event, error) {
	size := recordSize(ev.Key, ev.Value, ev.Headers)
	if size <= o.max {
		return ev, nil
	}
	problem := fmt.Sprintf("event %s of %s for topic %s is %d bytes as a Kafka record (value %d bytes), more than kafka.max_message_bytes (%d)",
		ev.ID, ev.Table, ev.Topic, size, len(ev.Value), o.max)
	if o.topic == "" {
		return nil, fault.Fatal(fmt.Errorf("%s; kafka.oversized is stop, so the relay stops rather than lose it: shrink the event, raise kafka.max_message_bytes together with the topic's max.message.bytes, or set kafka.oversized: dead_letter", problem))
	}
	dl := &decode.Event{
		Table:     ev.Table,
		Topic:     o.topic,
		Key:       ev.Key,
		ID:        ev.ID,
		Timestamp: ev.Timestamp,
		Partition: -1,
		Seq:       ev.Seq,
		Headers: []decode.Header{
			{Key: dlHeaderID, Value: []byte(ev.ID)},
			{Key: dlHeaderType, Value: headerValue(ev.Headers, "type")},
			{Key: dlHeaderTable, Value: []byte(ev.Table)},
			{Key: dlHeaderOriginalTopic, Value: []byte(ev.Topic)},
			{Key: dlHeaderError, Value: []byte("record of " + strconv.Itoa(size) + " bytes exceeds kafka.max_message_bytes " + strconv.Itoa(o.max))},
		},
	}
	if n := recordSize(dl.Key, nil, dl.Headers); n > o.max {
		return nil, fault.Fatal(fmt.Errorf("%s, and even its dead letter record (key and headers) is %d bytes: shrink the key or raise kafka.max_message_bytes", problem, n))
	}
	o.log.Warn().Str("id", ev.ID).Str("table", ev.Table).Str("topic", ev.Topic).Int("bytes", size).
		Int("max_message_bytes", o.max).Str("dead_letter_topic", o.topic).
		Msg("event too large for Kafka; sending a dead letter record without its payload instead")
	if o.obs != nil {
		o.obs.DeadLettered(ev.Table)
	}
	return dl, nil
}

func headerValue(hs []decode.Header, key string) []byte {
	for _, h := range hs {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// recordOverhead is the most a record's framing can add in a v2 record batch
// (length, attributes, timestamp and offset deltas, key and value lengths,
// header count): sarama's maximumRecordOverhead.
const recordOverhead = 5*binary.MaxVarintLen32 + binary.MaxVarintLen64 + 1

// recordSize is the size sarama compares with Producer.MaxMessageBytes for a
// record with these parts (ProducerMessage.ByteSize for record batches), so
// that the relay catches an oversized event before sarama does.
func recordSize(key, value []byte, headers []decode.Header) int {
	n := recordOverhead + len(key) + len(value)
	for _, h := range headers {
		n += len(h.Key) + len(h.Value) + 2*binary.MaxVarintLen32
	}
	return n
}
