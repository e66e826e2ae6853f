package sink

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/relay-dev/relay/pkg/decode"
)

func benchEvent() *decode.Event {
	return &decode.Event{
		Table: "public.outbox", Topic: "outbox.event.Order", Key: []byte("order-123"),
		Value:     []byte(`{"orderId":"order-123","customer":"c-42","total":129.95,"currency":"EUR","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"padding to ~200 bytes"}`),
		ID:        "8f1c6a3e-7f0a-4d2b-9a51-3c0f5c2b9e11",
		Headers:   []decode.Header{{Key: "id", Value: []byte("8f1c6a3e-7f0a-4d2b-9a51-3c0f5c2b9e11")}, {Key: "type", Value: []byte("OrderCreated")}},
		Partition: -1,
	}
}

// TestNewItemPartitionsAsJava checks records built for the producer still land
// on the Java client's partition for their key.
func TestNewItemPartitionsAsJava(t *testing.T) {
	ev := benchEvent()
	it := newItem(ev, time.Now())
	p := explicitOr(newMurmur2Partitioner)("outbox.event.Order")
	want := int32(kgo.StickyKeyPartitioner(nil).ForTopic(ev.Topic).Partition(&kgo.Record{Key: ev.Key}, 12))
	got, err := p.Partition(&it.msg, 12)
	if err != nil || got != want {
		t.Fatalf("partition %d, %v; want %d (franz-go's Java-compatible partitioner)", got, err, want)
	}
	k, _ := it.msg.Key.Encode()
	v, _ := it.msg.Value.Encode()
	if string(k) != "order-123" || string(v) != string(ev.Value) || len(it.msg.Headers) != 2 || string(it.msg.Headers[0].Key) != "id" {
		t.Fatalf("message %+v", it.msg)
	}
	ev.Partition = 5
	if got, _ := p.Partition(&newItem(ev, time.Now()).msg, 12); got != 5 {
		t.Fatalf("explicit partition ignored: %d", got)
	}
}

// BenchmarkBuildRecord measures turning a decoded event into the producer's
// message and choosing its partition: one allocation, the item itself.
func BenchmarkBuildRecord(b *testing.B) {
	ev := benchEvent()
	p := explicitOr(newMurmur2Partitioner)("outbox.event.Order")
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		it := newItem(ev, now)
		if _, err := p.Partition(&it.msg, 12); err != nil {
			b.Fatal(err)
		}
	}
}

// fakeProducer is an AsyncProducer whose acknowledgements the test gives.
type fakeProducer struct {
	sarama.AsyncProducer
	input     chan *sarama.ProducerMessage
	successes chan *sarama.ProducerMessage
	errors    chan *sarama.ProducerError
}

func newFakeProducer() *fakeProducer {
	return &fakeProducer{input: make(chan *sarama.ProducerMessage), successes: make(chan *sarama.ProducerMessage),
		errors: make(chan *sarama.ProducerError)}
}

func (f *fakeProducer) Input() chan<- *sarama.ProducerMessage     { return f.input }
func (f *fakeProducer) Successes() <-chan *sarama.ProducerMessage { return f.successes }
func (f *fakeProducer) Errors() <-chan *sarama.ProducerError      { return f.errors }
func (f *fakeProducer) AsyncClose()                               { close(f.successes); close(f.errors) }
func (f *fakeProducer) ack(msg *sarama.ProducerMessage)           { f.successes <- msg }
func (f *fakeProducer) next(t *testing.T) *sarama.ProducerMessage { t.Helper(); return <-f.input }
func (f *fakeProducer) idle() bool {
	select {
	case <-f.input:
		return false
	default:
		return true
	}
}

type fakeClient struct{ sarama.Client }

func (fakeClient) Close() error { return nil }

type acks struct {
	mu   sync.Mutex
	seqs []uint64
}

func (a *acks) Ack(seq uint64) { a.mu.Lock(); a.seqs = append(a.seqs, seq); a.mu.Unlock() }

// TestDeadLetterWaitsForItsKey: a dead letter is not sent while an earlier
// event of its key is unacknowledged (were that one to fail, its own dead
// letter would come after this one); other keys are not held up by it.
func TestDeadLetterWaitsForItsKey(t *testing.T) {
	k := dlKafka()
	k.MaxMessageBytes = 1000
	ap := newFakeProducer()
	a := &acks{}
	p := &Producer{ap: ap, client: fakeClient{}, ack: a, log: zerolog.Nop(), unpub: newUnpublishable(k, nil, zerolog.Nop(), nil), fl: newFlight()}
	in := make(chan *decode.Event)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background(), in) }()

	first := bigEvent(10) // key order-7
	first.Seq = 1
	big := bigEvent(5000) // the same key, oversized
	big.Seq = 2
	in <- first
	m1 := ap.next(t)
	in <- big
	waitUntil(t, "the dead letter to wait", p.fl.isWaiting)
	if !ap.idle() {
		t.Fatal("the dead letter was sent while an earlier event of its key was in flight")
	}
	ap.ack(m1)
	dl := ap.next(t)
	if dl.Topic != "relay.dead-letter" {
		t.Fatalf("after the ack: %s", dl.Topic)
	}
	ap.ack(dl)

	// A dead letter whose key has nothing in flight goes at once, even with
	// another key's record in flight.
	other := bigEvent(10)
	other.Key, other.Seq = []byte("order-8"), 3
	for i := 9; p.fl.slot(other.Key) == p.fl.slot(first.Key); i++ { // a bucket of its own
		other.Key = []byte(fmt.Sprintf("order-%d", i))
	}
	in <- other
	m3 := ap.next(t)
	big2 := bigEvent(5000)
	big2.Seq = 4
	in <- big2
	if dl2 := ap.next(t); dl2.Topic != "relay.dead-letter" {
		t.Fatalf("second dead letter: %s", dl2.Topic)
	} else {
		ap.ack(dl2)
	}
	ap.ack(m3)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seqs) != 4 {
		t.Errorf("acked %v, want 4 sequence numbers", a.seqs)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
