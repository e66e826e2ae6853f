package sink

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// TestRecordSizeMatchesSarama pins recordSize to the size sarama checks, so an
// event recordSize lets through is never refused by sarama for its size.
func TestRecordSizeMatchesSarama(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	blob := func() []byte {
		if r.IntN(5) == 0 {
			return nil
		}
		return bytes.Repeat([]byte("x"), r.IntN(3000))
	}
	for i := 0; i < 500; i++ {
		key, value := blob(), blob()
		var hs []decode.Header
		for j := r.IntN(5); j > 0; j-- {
			hs = append(hs, decode.Header{Key: strings.Repeat("h", r.IntN(20)), Value: blob()})
		}
		msg := &sarama.ProducerMessage{}
		if key != nil {
			msg.Key = sarama.ByteEncoder(key)
		}
		if value != nil {
			msg.Value = sarama.ByteEncoder(value)
		}
		for _, h := range hs {
			msg.Headers = append(msg.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
		}
		// Record batches (version 2) are what Kafka 0.11+, the relay's
		// minimum, speaks.
		if got, want := recordSize(key, value, hs), msg.ByteSize(2); got != want {
			t.Fatalf("recordSize = %d, sarama's ByteSize = %d", got, want)
		}
	}
}

type dlObserver struct {
	Observer
	tables []string
}

func (o *dlObserver) DeadLettered(table string) { o.tables = append(o.tables, table) }

func bigEvent(valueBytes int) *decode.Event {
	return &decode.Event{
		Table: "public.outbox", Topic: "outbox.event.Order", Key: []byte("order-7"),
		Value: bytes.Repeat([]byte("v"), valueBytes), ID: "6c1f0b9e-0000-4000-8000-000000000001",
		Headers:   []decode.Header{{Key: "id", Value: []byte("6c1f0b9e-0000-4000-8000-000000000001")}, {Key: "type", Value: []byte("OrderCreated")}},
		Timestamp: time.Unix(1700000000, 0), Partition: 2, Seq: 41,
	}
}

func TestOversizedStop(t *testing.T) {
	k := config.Default().Kafka
	k.MaxMessageBytes = 1000
	u := newUnpublishable(k, nil, zerolog.Nop(), nil)
	small := bigEvent(100)
	if got, err := u.check(small); err != nil || got != small {
		t.Fatalf("a small event: %v, %v", got, err)
	}
	ev := bigEvent(2000)
	_, err := u.check(ev)
	if !fault.IsFatal(err) {
		t.Fatalf("oversized with stop: %v, want a fatal error", err)
	}
	for _, want := range []string{ev.ID, "public.outbox", `topic "outbox.event.Order"`, "kafka.max_message_bytes (1000)", "kafka.on_unpublishable is stop", "dead_letter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	// Under the deprecated name, the message names the key the user wrote.
	k.Oversized = config.UnpublishableStop
	if _, err := newUnpublishable(k, nil, zerolog.Nop(), nil).check(ev); err == nil || !strings.Contains(err.Error(), "kafka.oversized is stop") {
		t.Errorf("oversized: stop: %v", err)
	}
}

func TestOversizedDeadLetter(t *testing.T) {
	k := config.Default().Kafka
	k.MaxMessageBytes = 1000
	// The deprecated name still chooses the policy.
	k.Oversized, k.DeadLetterTopic = config.UnpublishableDeadLetter, "relay.dead-letter"
	obs := &dlObserver{}
	var logs bytes.Buffer
	u := newUnpublishable(k, obs, zerolog.New(&logs), nil)
	ev := bigEvent(5000)
	dl, err := u.check(ev)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Topic != "relay.dead-letter" || dl.Value != nil || string(dl.Key) != "order-7" || dl.Seq != ev.Seq || dl.Partition != -1 || dl.Table != ev.Table {
		t.Errorf("dead letter event = %+v", dl)
	}
	h := headerMap(dl)
	if h["id"] != ev.ID || h["type"] != "OrderCreated" || h["table"] != "public.outbox" || h["original-topic"] != "outbox.event.Order" ||
		!strings.Contains(h["error"], "exceeds kafka.max_message_bytes 1000") || h["reason"] != "oversized" || len(dl.Headers) != 6 {
		t.Errorf("dead letter headers = %v", h)
	}
	if len(obs.tables) != 1 || obs.tables[0] != "public.outbox" {
		t.Errorf("observer saw %v", obs.tables)
	}
	if !strings.Contains(logs.String(), ev.ID) || strings.Contains(logs.String(), "vvvv") {
		t.Errorf("log line should name the event and leave out the payload: %s", logs.String())
	}

	// A key too large for even the dead letter record cannot be parked.
	huge := bigEvent(10)
	huge.Key = bytes.Repeat([]byte("k"), 2000)
	if _, err := u.check(huge); !fault.IsFatal(err) {
		t.Errorf("oversized key: %v, want a fatal error", err)
	}
}

func headerMap(ev *decode.Event) map[string]string {
	h := map[string]string{}
	for _, x := range ev.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

func TestValidTopic(t *testing.T) {
	for _, name := range []string{"a", "outbox.event.Order", "A-Z_0.9", "...", strings.Repeat("x", 249)} {
		if !validTopic(name) {
			t.Errorf("%q refused", name)
		}
	}
	for _, name := range []string{"", ".", "..", "Order/Created", "order created", "é", "a\x00b", "a:b", strings.Repeat("x", 250), strings.Repeat("x", 300)} {
		if validTopic(name) {
			t.Errorf("%q accepted", name)
		}
	}
}

func dlKafka() config.Kafka {
	k := config.Default().Kafka
	k.OnUnpublishable, k.DeadLetterTopic = config.UnpublishableDeadLetter, "relay.dead-letter"
	return k
}

func TestInvalidTopic(t *testing.T) {
	for _, topic := range []string{"outbox.event.Order/Created", "outbox.event." + strings.Repeat("A", 300)} {
		ev := bigEvent(10)
		ev.Topic = topic
		_, err := newUnpublishable(config.Default().Kafka, nil, zerolog.Nop(), nil).check(ev)
		if !fault.IsFatal(err) {
			t.Fatalf("%s under stop: %v, want a fatal error", topic, err)
		}
		for _, want := range []string{"event " + ev.ID + " of public.outbox", fmt.Sprintf("topic %q", topic), "not a legal Kafka topic name", "route_regex", "kafka.on_unpublishable: dead_letter"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}

		ev.Headers = append(ev.Headers, decode.Header{Key: "tenant", Value: []byte("acme")}, decode.Header{Key: "table", Value: []byte("spoofed")})
		dl, err := newUnpublishable(dlKafka(), nil, zerolog.Nop(), nil).check(ev)
		if err != nil {
			t.Fatal(err)
		}
		h := headerMap(dl)
		// The payload and the event's own headers come along (but not one
		// that would shadow the dead letter's own).
		if dl.Topic != "relay.dead-letter" || string(dl.Value) != string(ev.Value) || dl.Seq != ev.Seq || h["reason"] != "invalid_topic" ||
			h["original-topic"] != topic || h["table"] != "public.outbox" || h["tenant"] != "acme" || h["id"] != ev.ID || len(dl.Headers) != 7 ||
			!strings.Contains(h["error"], "not a legal Kafka topic name") {
			t.Errorf("dead letter %+v, headers %v", dl, h)
		}
	}
}

// TestDeadLetterLeavesOutWhatDoesNotFit: an event refused for its topic
// whose payload would make its dead letter too large goes without it.
func TestDeadLetterLeavesOutWhatDoesNotFit(t *testing.T) {
	k := dlKafka()
	k.MaxMessageBytes = 1000
	ev := bigEvent(900)
	ev.Topic = "bad topic"
	dl, err := newUnpublishable(k, nil, zerolog.Nop(), nil).check(ev)
	if err != nil {
		t.Fatal(err)
	}
	if h := headerMap(dl); dl.Value != nil || len(dl.Headers) != 6 || !strings.Contains(h["error"], "payload and headers left out") || h["reason"] != "invalid_topic" {
		t.Errorf("dead letter %+v, headers %v", dl, h)
	}
}

func TestRefusedTopic(t *testing.T) {
	t.Cleanup(refusals.forget)
	refusals.forget()
	ev := bigEvent(10)
	ev.Topic = "outbox.event.Secret"
	refusal := fmt.Errorf("produce: %w", sarama.ErrTopicAuthorizationFailed)

	// stop: fatal at once, naming the event and the way past.
	err := newUnpublishable(config.Default().Kafka, nil, zerolog.Nop(), nil).refused(ev, refusal)
	if !fault.IsFatal(err) {
		t.Fatalf("refused topic under stop: %v, want a fatal error", err)
	}
	for _, want := range []string{ev.ID, "public.outbox", `"outbox.event.Secret"`, "grant", "kafka.on_unpublishable: dead_letter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if !refusals.empty() {
		t.Fatal("a refusal under stop was remembered")
	}

	// dead_letter: a restart (retryable), and the next producer sends the
	// topic's events to the dead letter topic before trying them.
	u := newUnpublishable(dlKafka(), nil, zerolog.Nop(), nil)
	err = u.refused(ev, refusal)
	if err == nil || fault.IsFatal(err) || !errors.Is(err, sarama.ErrTopicAuthorizationFailed) {
		t.Fatalf("refused topic under dead_letter: %v, want a retryable error", err)
	}
	dl, err := u.check(ev)
	if err != nil || dl.Topic != "relay.dead-letter" || headerMap(dl)["reason"] != "topic_authorization_failed" || string(dl.Value) != string(ev.Value) {
		t.Fatalf("event for the refused topic: %+v, %v", dl, err)
	}
	other := bigEvent(10)
	if got, err := u.check(other); got != other || err != nil {
		t.Errorf("event for another topic: %+v, %v", got, err)
	}
	// The refusal lapses, and the topic is tried again.
	if _, ok := refusals.denied(ev.Topic, time.Now().Add(deniedFor+time.Second)); ok {
		t.Error("refusal did not lapse")
	}
	if got, err := u.check(ev); got != ev || err != nil {
		t.Errorf("after the refusal lapsed: %+v, %v", got, err)
	}

	// A name the brokers refuse though it passed the relay's own check.
	if err := u.refused(ev, sarama.ErrInvalidTopic); err == nil || fault.IsFatal(err) {
		t.Errorf("invalid topic from the broker: %v", err)
	}
	if dl, _ := u.check(ev); dl == nil || headerMap(dl)["reason"] != "invalid_topic" {
		t.Errorf("after a broker's invalid topic: %+v", dl)
	}

	// The dead letter topic itself refused: nowhere left to go.
	dead := &decode.Event{ID: ev.ID, Table: ev.Table, Topic: "relay.dead-letter", Partition: -1}
	if err := u.refused(dead, refusal); !fault.IsFatal(err) || !strings.Contains(err.Error(), "kafka.dead_letter_topic") {
		t.Errorf("refused dead letter topic: %v", err)
	}
}

// TestClusterAuthorizationStops: a cluster-wide refusal is not about one
// event, so it never sends anything to the dead letter topic.
func TestClusterAuthorizationStops(t *testing.T) {
	t.Cleanup(refusals.forget)
	u := newUnpublishable(dlKafka(), nil, zerolog.Nop(), nil)
	ev := bigEvent(10)
	if err := u.refused(ev, sarama.ErrClusterAuthorizationFailed); err != nil {
		t.Errorf("refused() took a cluster refusal for the event's: %v", err)
	}
	if !refusals.empty() {
		t.Error("a cluster refusal was remembered against the topic")
	}
	err := classify(fmt.Errorf("publishing: %w", sarama.ErrClusterAuthorizationFailed))
	if !fault.IsFatal(err) || !strings.Contains(err.Error(), "IdempotentWrite") {
		t.Errorf("classify(cluster authorization) = %v", err)
	}
	for _, e := range []error{sarama.ErrOutOfBrokers, sarama.ErrNotEnoughReplicas, sarama.ErrRequestTimedOut} {
		if err := u.refused(ev, e); err != nil {
			t.Errorf("refused(%v) = %v, want nil (not about the record)", e, err)
		}
	}
}

func TestPartitionOutOfRange(t *testing.T) {
	t.Cleanup(refusals.forget)
	refusals.forget()
	parts := []int32{0, 1, 2, 3}
	asked := 0
	partitions := func(topic string) ([]int32, error) {
		asked++
		if topic != "outbox.event.Order" {
			return nil, fmt.Errorf("unexpected topic %s", topic)
		}
		return parts, nil
	}
	ev := bigEvent(10)
	ev.Partition = 7
	u := newUnpublishable(dlKafka(), nil, zerolog.Nop(), partitions)
	// Unknown yet: the event goes to sarama, whose partitioner refuses it.
	if got, err := u.check(ev); got != ev || err != nil || asked != 0 {
		t.Fatalf("before any refusal: %+v, %v, asked %d", got, err, asked)
	}
	p := explicitOr(newMurmur2Partitioner)(ev.Topic)
	_, perr := p.Partition(&newItem(ev, time.Now()).msg, 4)
	if !errors.Is(perr, errPartitionRange) {
		t.Fatalf("partitioner: %v", perr)
	}
	// Whatever the policy, a restart first: the metadata may predate new
	// partitions.
	if err := u.refused(ev, perr); err == nil || fault.IsFatal(err) {
		t.Fatalf("refused(partition out of range) = %v, want retryable", err)
	}
	dl, err := u.check(ev)
	if err != nil || dl.Topic != "relay.dead-letter" || headerMap(dl)["reason"] != "partition_out_of_range" ||
		!strings.Contains(headerMap(dl)["error"], "partition_column value 7 but topic outbox.event.Order has 4 partitions") {
		t.Fatalf("after the restart: %+v, %v", dl, err)
	}
	inRange := bigEvent(10)
	inRange.Partition = 3
	if got, err := u.check(inRange); got != inRange || err != nil {
		t.Errorf("partition 3 of 4: %+v, %v", got, err)
	}
	// The topic grew: the event goes through.
	parts = append(parts, 4, 5, 6, 7)
	if got, err := u.check(ev); got != ev || err != nil {
		t.Errorf("after the topic grew: %+v, %v", got, err)
	}
	parts = parts[:4]
	_, err = newUnpublishable(config.Default().Kafka, nil, zerolog.Nop(), partitions).check(ev)
	if !fault.IsFatal(err) || !strings.Contains(err.Error(), "give the topic more than 7 partitions") || !strings.Contains(err.Error(), ev.ID) {
		t.Errorf("under stop: %v", err)
	}
}
