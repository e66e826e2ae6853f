package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
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

// BenchmarkBuildRecord measures turning a decoded event into the record that
// goes into a batch and choosing its partition: one allocation, the record
// itself.
func BenchmarkBuildRecord(b *testing.B) {
	ev := benchEvent()
	p := explicitOr(newMurmur2Partitioner)("outbox.event.Order")
	now := time.Now()
	var msg sarama.ProducerMessage
	var key sarama.ByteEncoder
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r := newRecord(ev, now)
		key = r.ev.Key
		msg.Topic, msg.Key = ev.Topic, &key
		if _, err := p.Partition(&msg, 12); err != nil {
			b.Fatal(err)
		}
	}
}

// fakeCluster has one broker leading every partition of every topic.
type fakeCluster struct {
	parts int32
	b     *fakeBroker

	mu         sync.Mutex
	refreshErr error // what RefreshMetadata answers
	refreshes  int
	leaders    int
}

func (c *fakeCluster) Partitions(string) ([]int32, error) {
	ids := make([]int32, c.parts)
	for i := range ids {
		ids[i] = int32(i)
	}
	return ids, nil
}
func (c *fakeCluster) RefreshMetadata(...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshes++
	return c.refreshErr
}
func (c *fakeCluster) leader(string, int32) (brokerConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaders++
	return c.b, nil
}

func (c *fakeCluster) counts() (refreshes, leaders int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshes, c.leaders
}
func (c *fakeCluster) Close() error { return nil }

// fakeBroker hands every request to the test, which answers it.
type fakeBroker struct {
	p    *Producer
	reqs chan *sentRequest
}

type tp struct {
	topic string
	part  int32
}

// sentRequest is what a request carried, by partition, in order.
type sentRequest struct {
	seqs map[tp][]uint64
	req  *request
	p    *Producer
}

// produce runs on Run's goroutine, so it may read the producer's queues:
// the records of a partition that are in flight are its batch.
func (b *fakeBroker) produce(req *request) error {
	s := &sentRequest{seqs: map[tp][]uint64{}, req: req, p: b.p}
	for topic, tq := range b.p.topics {
		for id, q := range tq.parts {
			for _, r := range q.pending[:q.sent] {
				s.seqs[tp{topic, id}] = append(s.seqs[tp{topic, id}], r.ev.Seq)
			}
		}
	}
	b.reqs <- s
	return nil
}

// fail breaks the connection the request went on.
func (s *sentRequest) fail(err error) { s.p.results <- result{req: s.req, err: err} }

func (b *fakeBroker) Close() error { return nil }

// answer gives every partition of the request the same error code.
func (s *sentRequest) answer(kerr sarama.KError) {
	for i := range s.req.errs {
		s.req.errs[i] = nil
		if kerr != sarama.ErrNoError {
			s.req.errs[i] = kerr
		}
	}
	s.p.results <- result{req: s.req}
}

type acks struct {
	mu   sync.Mutex
	seqs []uint64
}

func (a *acks) Ack(seq uint64) { a.mu.Lock(); a.seqs = append(a.seqs, seq); a.mu.Unlock() }

func (a *acks) got() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seqs)
}

// testProducer runs a producer against a fake broker; partitions is every
// topic's partition count.
func testProducer(t *testing.T, k config.Kafka, partitions int32, tweaks ...func(*Producer)) (*Producer, *fakeBroker, *acks, chan<- *decode.Event, <-chan error) {
	t.Helper()
	t.Cleanup(refusals.forget)
	k.Linger = 0
	sc, err := SaramaConfig(k)
	if err != nil {
		t.Fatal(err)
	}
	sc.Producer.Retry.BackoffFunc = func(int, int) time.Duration { return time.Millisecond }
	b := &fakeBroker{reqs: make(chan *sentRequest, 16)}
	a := &acks{}
	p := newProducer(&fakeCluster{parts: partitions, b: b}, sc, k, a, nil, zerolog.Nop())
	b.p = p
	for _, f := range tweaks {
		f(p)
	}
	in := make(chan *decode.Event, 16)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background(), in) }()
	return p, b, a, in, done
}

func keyed(seq uint64, key string) *decode.Event {
	ev := bigEvent(10)
	ev.Key, ev.Seq, ev.Partition = []byte(key), seq, 0
	return ev
}

func next(t *testing.T, b *fakeBroker) *sentRequest {
	t.Helper()
	select {
	case s := <-b.reqs:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no produce request")
		return nil
	}
}

func noRequest(t *testing.T, b *fakeBroker) {
	t.Helper()
	select {
	case s := <-b.reqs:
		t.Fatalf("unexpected request %v", s.seqs)
	default:
	}
}

var p0 = tp{"outbox.event.Order", 0}

// TestProducerBatchesWhileInFlight: one request in flight per broker, and
// what arrives meanwhile leaves together in the next one, in order.
func TestProducerBatchesWhileInFlight(t *testing.T) {
	_, b, a, in, done := testProducer(t, config.Default().Kafka, 1)
	in <- keyed(1, "k")
	r1 := next(t, b)
	if !slices.Equal(r1.seqs[p0], []uint64{1}) {
		t.Fatalf("first request %v", r1.seqs)
	}
	in <- keyed(2, "k")
	in <- keyed(3, "other")
	waitUntil(t, "events 2 and 3 to be taken", func() bool { return len(in) == 0 })
	noRequest(t, b)
	r1.answer(sarama.ErrNoError)
	r2 := next(t, b)
	if !slices.Equal(r2.seqs[p0], []uint64{2, 3}) {
		t.Fatalf("second request %v, want 2 and 3 in one batch", r2.seqs)
	}
	r2.answer(sarama.ErrNoError)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.got(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("acked %v", got)
	}
}

// TestProducerWaitsOutThrottle: a broker that asks for a pause (its quota's
// throttle time) gets no request before the pause is over.
func TestProducerWaitsOutThrottle(t *testing.T) {
	_, b, a, in, done := testProducer(t, config.Default().Kafka, 1)
	in <- keyed(1, "k")
	r1 := next(t, b)
	const pause = 300 * time.Millisecond
	r1.req.throttle = int32(pause / time.Millisecond)
	answered := time.Now()
	r1.answer(sarama.ErrNoError)
	in <- keyed(2, "k")
	r2 := next(t, b)
	if waited := time.Since(answered); waited < pause {
		t.Fatalf("second request %v after a throttled response, want %v", waited, pause)
	}
	r2.answer(sarama.ErrNoError)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.got(); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("acked %v", got)
	}
}

// TestProducerRetryKeepsOrder: a batch refused for now is sent again before
// anything later of its partition, and nothing later goes ahead of it.
func TestProducerRetryKeepsOrder(t *testing.T) {
	_, b, a, in, done := testProducer(t, config.Default().Kafka, 1)
	in <- keyed(1, "k")
	r1 := next(t, b)
	in <- keyed(2, "k")
	waitUntil(t, "event 2 to be taken", func() bool { return len(in) == 0 })
	r1.answer(sarama.ErrNotLeaderForPartition)
	r2 := next(t, b)
	if !slices.Equal(r2.seqs[p0], []uint64{1, 2}) {
		t.Fatalf("after NOT_LEADER: %v, want 1 again, then 2", r2.seqs)
	}
	// A broken connection is retried too.
	r2.fail(io.ErrUnexpectedEOF)
	r3 := next(t, b)
	if !slices.Equal(r3.seqs[p0], []uint64{1, 2}) {
		t.Fatalf("after a broken connection: %v", r3.seqs)
	}
	r3.answer(sarama.ErrNoError)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.got(); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("acked %v", got)
	}
}

// TestProducerStopsOnRefusal: a batch refused for good ends Run with an
// error naming the event, and nothing more is sent.
func TestProducerStopsOnRefusal(t *testing.T) {
	_, b, a, in, done := testProducer(t, config.Default().Kafka, 1)
	in <- keyed(1, "k")
	r1 := next(t, b)
	in <- keyed(2, "k")
	waitUntil(t, "event 2 to be taken", func() bool { return len(in) == 0 })
	r1.answer(sarama.ErrMessageSizeTooLarge)
	err := <-done
	if !fault.IsFatal(err) || !strings.Contains(err.Error(), "kafka.max_message_bytes") || !strings.Contains(err.Error(), bigEvent(0).ID) {
		t.Fatalf("Run = %v, want a fatal error naming the event and the setting", err)
	}
	noRequest(t, b)
	if got := a.got(); len(got) != 0 {
		t.Fatalf("acked %v", got)
	}
}

// TestProducerStopsAtUnpublishable: under kafka.on_unpublishable stop, the
// events before an oversized one are still sent and acked, so the relay
// stops exactly at it; nothing after it is taken.
func TestProducerStopsAtUnpublishable(t *testing.T) {
	k := config.Default().Kafka
	k.MaxMessageBytes = 1000
	_, b, a, in, done := testProducer(t, k, 1)
	big := keyed(2, "k")
	big.Value = make([]byte, 5000)
	// Together, so that the producer takes them in one go.
	in <- keyed(1, "k")
	in <- big
	in <- keyed(3, "k")
	r := next(t, b)
	if !slices.Equal(r.seqs[p0], []uint64{1}) {
		t.Fatalf("request %v, want the event before the oversized one", r.seqs)
	}
	select {
	case err := <-done:
		t.Fatalf("Run ended before the event ahead was acked: %v", err)
	default:
	}
	r.answer(sarama.ErrNoError)
	if err := <-done; !fault.IsFatal(err) || !strings.Contains(err.Error(), "kafka.max_message_bytes") {
		t.Fatalf("Run = %v, want the oversized event's fatal error", err)
	}
	noRequest(t, b)
	if got := a.got(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("acked %v", got)
	}
}

// TestProducerOutageAsksOnce: with no broker answering metadata, a retry
// round asks once for every partition refused and looks up no leader (each
// lookup would wait out sarama's metadata retries again), and the batches
// go as soon as metadata comes back.
func TestProducerOutageAsksOnce(t *testing.T) {
	var c *fakeCluster
	_, b, a, in, done := testProducer(t, config.Default().Kafka, 4, func(p *Producer) {
		c = p.c.(*fakeCluster)
		c.refreshErr = sarama.ErrOutOfBrokers
	})
	// A first request in flight makes the four events queue up behind it,
	// so that the next request carries all four partitions; fed straight
	// in, Run may send the first before it has taken the others.
	in <- keyed(1, "k")
	r0 := next(t, b)
	for i := range 4 {
		ev := keyed(uint64(i+2), "k")
		ev.Partition = int32(i)
		in <- ev
	}
	waitUntil(t, "the four partitions queued", func() bool { _, n := c.counts(); return n >= 4 })
	r0.answer(sarama.ErrNoError)
	r := next(t, b)
	if len(r.seqs) != 4 {
		t.Fatalf("first request after the queueing: %v, want all four partitions", r.seqs)
	}
	_, leadersBefore := c.counts()
	r.fail(io.ErrUnexpectedEOF) // the connection breaks: all four retry
	waitUntil(t, "two retry rounds", func() bool { n, _ := c.counts(); return n >= 2 })
	if _, leaders := c.counts(); leaders != leadersBefore {
		t.Errorf("%d leader lookups while metadata failed", leaders-leadersBefore)
	}
	c.mu.Lock()
	c.refreshErr = nil
	c.mu.Unlock()
	r2 := next(t, b)
	if len(r2.seqs) != 4 {
		t.Fatalf("after the outage: %v, want all four partitions", r2.seqs)
	}
	r2.answer(sarama.ErrNoError)
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.got(); len(got) != 5 {
		t.Fatalf("acked %v", got)
	}
}

// TestProducerRetriesRunOut: a partition refused for now for longer than
// the delivery timeout ends Run with a retryable error.
func TestProducerRetriesRunOut(t *testing.T) {
	_, b, _, in, done := testProducer(t, config.Default().Kafka, 1, func(p *Producer) { p.giveUp = 50 * time.Millisecond })
	in <- keyed(1, "k")
	var err error
refusing:
	for {
		select {
		case r := <-b.reqs:
			r.answer(sarama.ErrNotEnoughReplicas)
		case err = <-done:
			break refusing
		case <-time.After(10 * time.Second):
			t.Fatal("Run went on retrying")
		}
	}
	if err == nil || fault.IsFatal(err) || !errors.Is(err, sarama.ErrNotEnoughReplicas) {
		t.Fatalf("Run = %v, want a retryable NOT_ENOUGH_REPLICAS", err)
	}
}

// TestDeadLetterWaitsForItsKey: a dead letter is not sent while an earlier
// event of its key is unacknowledged (were that one to fail, its own dead
// letter would come after this one), and nothing overtakes it meanwhile;
// other keys' dead letters are not held up by it.
func TestDeadLetterWaitsForItsKey(t *testing.T) {
	k := dlKafka()
	k.MaxMessageBytes = 1000
	p, b, a, in, done := testProducer(t, k, 4)

	first := bigEvent(10) // key order-7, partition 2
	first.Seq = 1
	big := bigEvent(5000) // the same key, oversized
	big.Seq = 2
	after := bigEvent(10)
	after.Seq = 3
	in <- first
	r1 := next(t, b)
	in <- big
	in <- after
	waitUntil(t, "the dead letter to wait", func() bool { return len(in) == 1 })
	noRequest(t, b)
	r1.answer(sarama.ErrNoError)
	r2 := next(t, b)
	dlParts := 0
	for k, seqs := range r2.seqs {
		if k.topic == "relay.dead-letter" {
			dlParts++
			if !slices.Equal(seqs, []uint64{2}) {
				t.Fatalf("dead letter batch %v", seqs)
			}
		}
	}
	if dlParts != 1 {
		t.Fatalf("after the ack: %v, want the dead letter", r2.seqs)
	}
	r2.answer(sarama.ErrNoError)
	if r3 := next(t, b); !slices.Equal(r3.seqs[tp{"outbox.event.Order", 2}], []uint64{3}) {
		t.Fatalf("the event behind the dead letter: %v", r3.seqs)
	} else {
		r3.answer(sarama.ErrNoError)
	}

	// A dead letter whose key has nothing in flight goes at once, even with
	// another key's record in flight.
	other := bigEvent(10)
	other.Key, other.Seq = []byte("order-8"), 4
	for i := 9; p.fl.slot(other.Key) == p.fl.slot(first.Key); i++ { // a bucket of its own
		other.Key = []byte(fmt.Sprintf("order-%d", i))
	}
	in <- other
	r4 := next(t, b)
	big2 := bigEvent(5000)
	big2.Seq = 5
	in <- big2
	waitUntil(t, "the second dead letter to be taken", func() bool { return len(in) == 0 })
	r4.answer(sarama.ErrNoError)
	if r5 := next(t, b); len(r5.seqs) != 1 {
		t.Fatalf("second dead letter: %v", r5.seqs)
	} else {
		r5.answer(sarama.ErrNoError)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.got(); len(got) != 5 {
		t.Errorf("acked %v, want 5 sequence numbers", got)
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
