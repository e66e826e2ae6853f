package sink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// An event is unpublishable when no retry can ever get it into Kafka as it
// is: its topic name is illegal, the brokers refuse the topic, its explicit
// partition does not exist, or the record is larger than
// kafka.max_message_bytes. kafka.on_unpublishable decides, for all of them
// alike, whether the relay stops on it (naming the event and the way past)
// or sends a dead letter record in its place.
//
// Either way the event is never skipped silently, and the order of the
// stream is kept: a dead letter record takes the event's place in the
// stream, carries its sequence number (so its acknowledgement is what
// confirms the event) and is sent by the same producer, in turn. What is
// found before sending (name, size) is handled in place. What only a broker
// can tell (a refused topic, a partition count) shows after later records
// were sent: the producer that sees it stops, the refusal is remembered, the
// pipeline restarts from the slot's confirmed position, and the next
// producer handles the event in place, before sending it. Dead-lettering it
// there and then instead would put its dead letter behind later ones of its
// key.

// DeadLetterObserver is implemented by observers that count events routed to
// the dead letter topic. It is optional so that observers without it (tests,
// older metrics) keep working.
type DeadLetterObserver interface {
	DeadLettered(table string)
}

// Why an event was dead-lettered, as its record's reason header says.
const (
	reasonInvalidTopic = "invalid_topic"
	reasonOversized    = "oversized"
	reasonRefused      = "topic_authorization_failed"
	reasonPartition    = "partition_out_of_range"
)

// Headers of a dead letter record, ahead of the event's own headers other
// than id and type (which it repeats) and of any named like these.
const (
	dlHeaderID            = "id"
	dlHeaderType          = "type"
	dlHeaderTable         = "table"
	dlHeaderOriginalTopic = "original-topic"
	dlHeaderError         = "error"
	dlHeaderReason        = "reason"
)

// unpublishable applies kafka.on_unpublishable. Checking the size here rather
// than leaving it to sarama matters: sarama reports an oversized record as a
// ConfigurationError, which looks retryable, and the pipeline would restart
// onto the same event forever.
type unpublishable struct {
	max       int
	deadTopic string // dead letter topic; "" stops the relay instead
	key       string // the config key that chose the policy, for messages
	obs       DeadLetterObserver
	log       zerolog.Logger
	// partitions reads the topic's partitions from the producer's metadata,
	// fetching them when the topic is new to it.
	partitions func(topic string) ([]int32, error)
}

func newUnpublishable(k config.Kafka, obs Observer, log zerolog.Logger, partitions func(string) ([]int32, error)) *unpublishable {
	policy, key := k.Unpublishable()
	u := &unpublishable{max: k.MaxMessageBytes, key: key, log: log, partitions: partitions}
	if policy == config.UnpublishableDeadLetter {
		u.deadTopic = k.DeadLetterTopic
	}
	if d, ok := obs.(DeadLetterObserver); ok {
		u.obs = d
	}
	return u
}

// check returns ev when it can be published; otherwise, by policy, the dead
// letter record that stands in for it, or a fatal error naming it.
func (u *unpublishable) check(ev *decode.Event) (*decode.Event, error) {
	if !validTopic(ev.Topic) {
		return u.refuse(ev, reasonInvalidTopic,
			fmt.Sprintf("topic %q is not a legal Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', neither \".\" nor \"..\")", ev.Topic),
			"is not a legal Kafka topic name",
			"change the table's topic or route_regex so that this route-by value maps to a legal name")
	}
	if size := recordSize(ev.Key, ev.Value, ev.Headers); size > u.max {
		return u.refuse(ev, reasonOversized,
			fmt.Sprintf("it is %d bytes as a Kafka record (value %d bytes), more than kafka.max_message_bytes (%d)", size, len(ev.Value), u.max),
			"record of "+strconv.Itoa(size)+" bytes exceeds kafka.max_message_bytes "+strconv.Itoa(u.max),
			"raise kafka.max_message_bytes together with the topic's max.message.bytes")
	}
	if refusals.empty() {
		return ev, nil
	}
	if d, ok := refusals.denied(ev.Topic, time.Now()); ok {
		problem, fix := refusalText(d.reason, d.why)
		return u.refuse(ev, d.reason, problem, "kafka refused the topic: "+d.why, fix)
	}
	if ev.Partition >= 0 && refusals.partitionsSuspect(ev.Topic) {
		// Asked after a restart, so from the new producer's fresh metadata:
		// a topic that has grown since the refusal is not refused again.
		if parts, err := u.partitions(ev.Topic); err == nil && int(ev.Partition) >= len(parts) {
			what := fmt.Sprintf("partition_column value %d but topic %s has %d partitions", ev.Partition, ev.Topic, len(parts))
			return u.refuse(ev, reasonPartition, "its explicit partition does not exist: "+what, what,
				fmt.Sprintf("give the topic more than %d partitions", ev.Partition))
		}
	}
	return ev, nil
}

// refuse stops on ev or returns its dead letter record. problem completes
// "event ... cannot be published: ", detail is the dead letter's error
// header, fix the way past other than dead_letter.
func (u *unpublishable) refuse(ev *decode.Event, reason, problem, detail, fix string) (*decode.Event, error) {
	if u.deadTopic == "" {
		return nil, u.stop(ev, problem, fix)
	}
	dl := &decode.Event{
		Table:     ev.Table,
		Topic:     u.deadTopic,
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
			{Key: dlHeaderReason, Value: []byte(reason)},
			{Key: dlHeaderError, Value: []byte(detail)},
		},
	}
	own := len(dl.Headers)
	if reason != reasonOversized {
		// The payload and the event's own headers go along when they fit,
		// so that the dead letter is enough to re-publish the event.
		dl.Value = ev.Value
		for _, h := range ev.Headers {
			if !hasHeader(dl.Headers[:own], h.Key) {
				dl.Headers = append(dl.Headers, h)
			}
		}
		if recordSize(dl.Key, dl.Value, dl.Headers) > u.max {
			dl.Value, dl.Headers = nil, dl.Headers[:own]
			dl.Headers[own-1].Value = []byte(detail + " (payload and headers left out: with them the dead letter record would exceed kafka.max_message_bytes)")
		}
	}
	if n := recordSize(dl.Key, dl.Value, dl.Headers); n > u.max {
		return nil, fault.Fatal(fmt.Errorf("event %s of %s for topic %q cannot be published: %s, and even its dead letter record (key and headers) is %d bytes, more than kafka.max_message_bytes (%d): shrink the key or raise kafka.max_message_bytes",
			ev.ID, ev.Table, ev.Topic, problem, n, u.max))
	}
	u.log.Warn().Str("id", ev.ID).Str("table", ev.Table).Str("topic", ev.Topic).Str("reason", reason).
		Str("error", detail).Str("dead_letter_topic", u.deadTopic).
		Msg("event cannot be published as it is; sending a dead letter record in its place")
	if u.obs != nil {
		u.obs.DeadLettered(ev.Table)
	}
	return dl, nil
}

// stop is the fatal error for ev under the stop policy.
func (u *unpublishable) stop(ev *decode.Event, problem, fix string) error {
	return fault.Fatal(fmt.Errorf("event %s of %s for topic %q cannot be published: %s; %s is stop, so the relay stops rather than skip it (the slot stays before it, and editing the row does not change the event already in the WAL): %s, or set kafka.on_unpublishable: dead_letter with kafka.dead_letter_topic to send it to a dead letter topic and carry on",
		ev.ID, ev.Table, ev.Topic, problem, u.key, fix))
}

// refused handles a record the brokers refused for good, which the
// producer only learns after sending later records: it remembers the
// refusal for the next producer, which checks for it before sending, and
// says whether to restart (a retryable error) or stop. It returns nil for
// errors that are not about the record itself.
func (u *unpublishable) refused(ev *decode.Event, err error) error {
	var reason string
	switch {
	case errors.Is(err, sarama.ErrTopicAuthorizationFailed):
		reason = reasonRefused
	case errors.Is(err, sarama.ErrInvalidTopic):
		reason = reasonInvalidTopic
	case errors.Is(err, errPartitionRange):
		// Possibly sarama's metadata predating new partitions: the next
		// producer asks afresh before deciding.
		refusals.suspectPartitions(ev.Topic)
		return fmt.Errorf("%w; restarting from the slot to check the topic's partitions afresh", err)
	default:
		return nil
	}
	if ev.Topic == u.deadTopic && u.deadTopic != "" {
		return fault.Fatal(fmt.Errorf("kafka refused the dead letter record of event %s of %s on kafka.dead_letter_topic %s: %w; grant the relay's principal Write (and Describe) on it", ev.ID, ev.Table, ev.Topic, err))
	}
	if u.deadTopic == "" {
		problem, fix := refusalText(reason, err.Error())
		return u.stop(ev, problem, fix)
	}
	refusals.deny(ev.Topic, denial{reason: reason, why: err.Error(), until: time.Now().Add(deniedFor)})
	return fmt.Errorf("event %s of %s: kafka refused topic %s: %w; restarting from the slot to send its events to the dead letter topic %s in their place, for %s",
		ev.ID, ev.Table, ev.Topic, err, u.deadTopic, deniedFor)
}

// refusalText is the problem and the way past for a topic the brokers
// refused.
func refusalText(reason, why string) (problem, fix string) {
	if reason == reasonInvalidTopic {
		return "the brokers refused the topic name (" + why + ")",
			"change the table's topic or route_regex so that this route-by value maps to a name the brokers accept"
	}
	return "the brokers refused the topic (" + why + ")", "grant the relay's principal Write (and Describe) on the topic"
}

// deniedFor is how long a refused topic's events are dead-lettered without
// trying the topic again: long enough that a missing ACL costs a restart
// every few minutes rather than one per event, short enough that granting
// it takes effect without restarting the relay.
const deniedFor = 5 * time.Minute

func headerValue(hs []decode.Header, key string) []byte {
	for _, h := range hs {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

func hasHeader(hs []decode.Header, key string) bool {
	for _, h := range hs {
		if h.Key == key {
			return true
		}
	}
	return false
}

// validTopic applies Kafka's rules for topic names (Topic.validate): 1 to
// 249 characters of [a-zA-Z0-9._-], and not "." or "..". Brokers refuse
// anything else, but not every broker (kfake, some proxies) enforces it, so
// the relay does.
func validTopic(t string) bool {
	if len(t) == 0 || len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		legal := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
		if !legal {
			return false
		}
	}
	return true
}

// refusals is what the brokers refused, kept across the producers of one
// process: the pipeline builds a new producer on every restart, and the
// point of remembering is that the next one handles the refused events
// before sending them.
var refusals refusalMemory

type refusalMemory struct {
	n           atomic.Int64 // entries, so that the common case costs no lock
	mu          sync.Mutex
	deniedUntil map[string]denial
	partitions  map[string]bool // topics an explicit partition was out of range for
}

type denial struct {
	reason, why string
	until       time.Time
}

// maxRefusals bounds the memory: topic names come from the data.
const maxRefusals = 10000

func (r *refusalMemory) empty() bool { return r.n.Load() == 0 }

func (r *refusalMemory) deny(topic string, d denial) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deniedUntil == nil {
		r.deniedUntil = map[string]denial{}
	}
	if len(r.deniedUntil) >= maxRefusals {
		// Make room from what has expired; if nothing has, the topic is
		// simply tried again, which costs a restart, not an event.
		now := time.Now()
		for t, d := range r.deniedUntil {
			if now.After(d.until) {
				delete(r.deniedUntil, t)
			}
		}
		if len(r.deniedUntil) >= maxRefusals {
			return
		}
	}
	r.deniedUntil[topic] = d
	r.count()
}

func (r *refusalMemory) denied(topic string, now time.Time) (denial, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.deniedUntil[topic]
	if ok && now.After(d.until) {
		delete(r.deniedUntil, topic)
		r.count()
		return denial{}, false
	}
	return d, ok
}

func (r *refusalMemory) suspectPartitions(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.partitions == nil {
		r.partitions = map[string]bool{}
	}
	if len(r.partitions) < maxRefusals {
		r.partitions[topic] = true
	}
	r.count()
}

func (r *refusalMemory) partitionsSuspect(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.partitions[topic]
}

func (r *refusalMemory) count() { r.n.Store(int64(len(r.deniedUntil) + len(r.partitions))) }

// forget clears the memory, for tests.
func (r *refusalMemory) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deniedUntil, r.partitions = nil, nil
	r.count()
}

// deprecatedOnce keeps the deprecation warning to one per process, as
// warnOnce does for the security warnings.
var deprecatedOnce sync.Once

// warnDeprecated asks users of kafka.oversized to rename it.
func warnDeprecated(k config.Kafka, log zerolog.Logger) {
	if k.Oversized == "" {
		return
	}
	deprecatedOnce.Do(func() {
		log.Warn().Str("setting", "kafka.oversized").
			Msg("kafka.oversized is deprecated: rename it to kafka.on_unpublishable, which it is read as (the policy now also covers illegal topic names, refused topics and missing partitions)")
	})
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
