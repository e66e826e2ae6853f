package sink

import (
	"bytes"
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
	o := newOversize(k, nil, zerolog.Nop())
	small := bigEvent(100)
	if got, err := o.check(small); err != nil || got != small {
		t.Fatalf("a small event: %v, %v", got, err)
	}
	ev := bigEvent(2000)
	_, err := o.check(ev)
	if !fault.IsFatal(err) {
		t.Fatalf("oversized with stop: %v, want a fatal error", err)
	}
	for _, want := range []string{ev.ID, "public.outbox", "kafka.max_message_bytes (1000)", "kafka.oversized"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestOversizedDeadLetter(t *testing.T) {
	k := config.Default().Kafka
	k.MaxMessageBytes = 1000
	k.Oversized, k.DeadLetterTopic = config.OversizedDeadLetter, "relay.dead-letter"
	obs := &dlObserver{}
	var logs bytes.Buffer
	o := newOversize(k, obs, zerolog.New(&logs))
	ev := bigEvent(5000)
	dl, err := o.check(ev)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Topic != "relay.dead-letter" || dl.Value != nil || string(dl.Key) != "order-7" || dl.Seq != ev.Seq || dl.Partition != -1 || dl.Table != ev.Table {
		t.Errorf("dead letter event = %+v", dl)
	}
	h := map[string]string{}
	for _, x := range dl.Headers {
		h[x.Key] = string(x.Value)
	}
	if h["id"] != ev.ID || h["type"] != "OrderCreated" || h["table"] != "public.outbox" || h["original-topic"] != "outbox.event.Order" ||
		!strings.Contains(h["error"], "exceeds kafka.max_message_bytes 1000") {
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
	if _, err := o.check(huge); !fault.IsFatal(err) {
		t.Errorf("oversized key: %v, want a fatal error", err)
	}
}
