package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
)

// Producer publishes events with produce requests of its own (wire.go), on
// a connection per broker that sarama opens (link.go): one goroutine owns
// every partition's queue and keeps at most one request in flight per
// broker, so a partition's records reach Kafka in the order they were handed
// over, and whatever arrives while a request is in flight goes in the next
// one. sarama's AsyncProducer does the same job through eight goroutines per
// record, which at everyday rates (one event per transaction, a hundred to a
// few thousand a second) cost the relay more CPU than everything else it
// does; here a record costs a hand-over from the stream, its share of a
// request written into a reused buffer, and the link's read of the response.
//
// A batch the broker refuses for a reason that can pass (no leader, not
// enough replicas, a broken connection) is sent again, after fresh metadata
// and a backoff, before anything later of its partition; sending it again can
// duplicate it (when the first attempt was written but its response lost),
// never reorder it. A batch refused for good, or for longer than
// deliveryTimeout, ends Run with an error and nothing more is sent: the
// pipeline restarts from the confirmed position.
type Producer struct {
	c     cluster
	ack   Acker
	obs   Observer
	log   zerolog.Logger
	unpub *unpublishable // kafka.on_unpublishable, see unpublishable.go
	fl    flight

	partitioner func(topic string) sarama.Partitioner
	msg         sarama.ProducerMessage // what the partitioner is asked about
	key         sarama.ByteEncoder
	linger      time.Duration
	maxBatch    int // bytes of one partition's batch: kafka.max_message_bytes
	giveUp      time.Duration
	backoff     func(retries int) time.Duration

	topics   map[string]*topicQueues
	brokers  map[brokerConn]*brokerState
	retrying []*partQueue
	parked   *decode.Event // a dead letter waiting for its key's earlier records
	results  chan result
	quit     chan struct{} // closed when Run has returned: callbacks stop waiting
	ran      bool
}

// cluster is what the producer needs of sarama's client.
type cluster interface {
	Partitions(topic string) ([]int32, error)
	RefreshMetadata(topics ...string) error
	leader(topic string, partition int32) (brokerConn, error)
	Close() error
}

// brokerConn is one broker's connection: a link.
type brokerConn interface {
	// produce writes req; its outcome arrives on the producer's results,
	// unless produce fails, in which case nothing of req was written.
	produce(req *request) error
	Close() error
}

// saramaCluster is sarama's client, for metadata, and a link of the
// producer's own to each leader.
type saramaCluster struct {
	sarama.Client
	conf  *sarama.Config
	links map[int32]*link // by broker id; only Run's goroutine uses it
	done  chan<- result
	quit  <-chan struct{}
}

func (c *saramaCluster) leader(topic string, partition int32) (brokerConn, error) {
	b, err := c.Leader(topic, partition)
	if err != nil {
		return nil, err
	}
	l := relink(c.links[b.ID()], b.Addr(), c.conf, c.done, c.quit)
	c.links[b.ID()] = l
	return l, nil
}

func (c *saramaCluster) Close() error {
	for _, l := range c.links {
		_ = l.Close()
	}
	return c.Client.Close()
}

type topicQueues struct {
	partitioner sarama.Partitioner
	parts       map[int32]*partQueue
}

// partQueue is one partition's records, oldest first; the first sent of them
// are in the request in flight.
type partQueue struct {
	topic   string
	id      int32
	leader  *brokerState // nil while the leader is looked up again
	pending []*record
	sent    int
	listed  bool // on leader.ready
	retries int
	retryAt time.Time
	failing time.Time // when its oldest batch was first refused; zero once it is acked
	lastErr error
}

type brokerState struct {
	conn      brokerConn
	busy      bool
	ready     []*partQueue // queues with records not yet sent (some maybe moved or backing off)
	since     time.Time    // when the oldest record not yet sent arrived, for the linger
	bytes     int          // of the records not yet sent, for the linger
	throttled time.Time    // no request before this, as the broker asked
	req       request      // the request in flight, reused
}

// record is an event as it goes into a record batch.
type record struct {
	ev   *decode.Event
	ts   time.Time // the record's timestamp, in ms
	at   time.Time // handed to the producer, for the latency metric
	size int
	slot uint16 // flight's key bucket + 1; 0: not counted per key
}

func newRecord(ev *decode.Event, now time.Time) *record {
	r := &record{ev: ev, at: now, size: recordSize(ev.Key, ev.Value, ev.Headers)}
	r.ts = ev.Timestamp
	if r.ts.IsZero() {
		r.ts = now
	}
	r.ts = r.ts.Truncate(time.Millisecond)
	return r
}

// request is a produce request: a batch from each of its queues, and what
// the broker said of each.
type request struct {
	b        *brokerState
	parts    []*partQueue
	batches  []wireBatch // batches[i] is parts[i]'s
	errs     []error     // of batches[i]
	offsets  []int64     // of batches[i], when wanted
	corr     int32
	version  int16
	throttle int32 // ms the broker asks the next request to wait
}

type result struct {
	req *request
	err error // the connection failed: none of the batches' outcome is known
}

// maxRequestBytes bounds a produce request across its partitions' batches;
// what does not fit goes in the next one. A drain is as fast with 2 MiB as
// with 8 (walsender-bound either way) and peaks 10 MB lower: the request and
// its encoding are both in memory while it is written.
const maxRequestBytes = 2 << 20

// deliveryTimeout is how long a partition may go on being refused before
// Run gives up: long enough to ride out a leader election or a broker's
// restart, short enough that an outage is reported (the pipeline restarts
// from the confirmed position, says why, and tries again from there) within
// a minute even though every retry waits out sarama's metadata retries.
// The Java client's delivery.timeout.ms is two minutes.
const deliveryTimeout = 30 * time.Second

// burst is how many events Run takes from its input, when they are already
// waiting, before it sends: a backlog leaves in full requests.
const burst = 512

// NewProducer connects to the brokers. Failing to reach them is retryable.
func NewProducer(k config.Kafka, ack Acker, obs Observer, log zerolog.Logger) (*Producer, error) {
	sc, err := SaramaConfig(k)
	if err != nil {
		return nil, err
	}
	// Flag weak settings, and test the credentials once before any retry
	// can turn a wrong password into dozens of failed logins (see
	// Handshake).
	warnInsecure(k, log)
	warnDeprecated(k, log)
	client, err := dial(k, sc, "")
	if err != nil {
		return nil, err
	}
	c := &saramaCluster{Client: client, conf: sc, links: map[int32]*link{}}
	p := newProducer(c, sc, k, ack, obs, log)
	c.done, c.quit = p.results, p.quit
	return p, nil
}

func newProducer(c cluster, sc *sarama.Config, k config.Kafka, ack Acker, obs Observer, log zerolog.Logger) *Producer {
	return &Producer{
		c: c, ack: ack, obs: obs, log: log,
		unpub:       newUnpublishable(k, obs, log, c.Partitions),
		fl:          newFlight(),
		partitioner: sc.Producer.Partitioner,
		linger:      k.Linger,
		maxBatch:    k.MaxMessageBytes,
		giveUp:      deliveryTimeout,
		backoff:     func(n int) time.Duration { return sc.Producer.Retry.BackoffFunc(n, sc.Producer.Retry.Max) },
		topics:      map[string]*topicQueues{},
		brokers:     map[brokerConn]*brokerState{},
		results:     make(chan result, 16),
		quit:        make(chan struct{}),
	}
}

// produceVersion is the produce request version for the configured Kafka
// version: what sarama's own producer would pick, but at most v8 (Kafka
// 2.4). Later versions change only the encoding (v9 is flexible: compact
// strings and tagged fields, which wire.go does not write) and add fields
// this producer does not read (v10 names a partition's new leader, which it
// takes from fresh metadata anyway). Brokers 4.x still accept v3 and later.
// Each broker connection lowers the version further to what that broker
// advertises.
func produceVersion(v sarama.KafkaVersion) int16 {
	switch {
	case v.IsAtLeast(sarama.V2_4_0_0):
		return 8
	case v.IsAtLeast(sarama.V2_1_0_0):
		return 7
	case v.IsAtLeast(sarama.V2_0_0_0):
		return 6
	case v.IsAtLeast(sarama.V1_0_0_0):
		return 5
	}
	return 3 // 0.11, the oldest kafka.version accepts: record batches with headers
}

// Run publishes events from in until in is closed and every event sent is
// acknowledged, or until ctx ends (abandoning what is in flight: the slot was
// not confirmed past it, so it is sent again after a restart). Each acked
// event's sequence number goes to the Acker. A failed event ends Run with an
// error. Run is called once per Producer; the pipeline builds a new one for
// every attempt.
func (p *Producer) Run(ctx context.Context, in <-chan *decode.Event) error {
	if p.ran {
		return errors.New("sink: Producer.Run called twice")
	}
	p.ran = true
	defer p.shutdown()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerAt time.Time
	// stopErr is an event that cannot be queued (kafka.on_unpublishable
	// stops on it, or its topic cannot be looked up). The events queued
	// before it still go, so that the relay stops exactly at it; nothing
	// after it is taken.
	var stopErr error
	for {
		if in == nil && p.fl.n == 0 && p.parked == nil {
			return stopErr
		}
		input := in
		if p.parked != nil {
			// Nothing overtakes the parked dead letter: it holds its place
			// in the stream.
			input = nil
		}
		select {
		case ev, ok := <-input:
			if !ok {
				in = nil
				break
			}
			err := p.take(ev)
			if err == nil {
				in, err = p.takeWaiting(in)
			}
			if err != nil {
				stopErr, in = err, nil
			}
		case res := <-p.results:
			if err := p.settle(res); err != nil {
				return err
			}
		case <-timer.C:
			timerAt = time.Time{}
			if err := p.retryDue(time.Now()); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if p.parked != nil && !p.fl.keyBusy(p.parked.Key) {
			ev := p.parked
			p.parked = nil
			if err := p.enqueue(ev, true); err != nil {
				stopErr, in = err, nil
			}
		}
		wake, err := p.flush(time.Now())
		if err != nil {
			return err
		}
		if !wake.Equal(timerAt) {
			timer.Stop()
			timerAt = wake
			if !wake.IsZero() {
				timer.Reset(time.Until(wake))
			}
		}
	}
}

// takeWaiting takes up to a burst of the events already waiting in in, so
// that a backlog leaves in full requests. It returns nil once in is closed.
func (p *Producer) takeWaiting(in <-chan *decode.Event) (<-chan *decode.Event, error) {
	for i := 1; i < burst && p.parked == nil; i++ {
		select {
		case ev, ok := <-in:
			if !ok {
				return nil, nil
			}
			if err := p.take(ev); err != nil {
				return in, err
			}
		default:
			return in, nil
		}
	}
	return in, nil
}

// take queues ev, or what kafka.on_unpublishable puts in its place.
func (p *Producer) take(ev *decode.Event) error {
	out, err := p.unpub.check(ev)
	if err != nil {
		return err
	}
	deadLetter := out != ev
	if deadLetter && out.Key != nil && p.fl.keyBusy(out.Key) {
		// The dead letter waits for its key's earlier records: one of them
		// failing later would be dead-lettered after the restart, behind
		// this one.
		p.parked = out
		return nil
	}
	return p.enqueue(out, deadLetter)
}

func (p *Producer) enqueue(ev *decode.Event, deadLetter bool) error {
	parts, err := p.c.Partitions(ev.Topic)
	if err == nil && len(parts) == 0 {
		err = sarama.ErrUnknownTopicOrPartition
	}
	if err != nil {
		return p.fail(ev, err)
	}
	tq := p.topics[ev.Topic]
	if tq == nil {
		tq = &topicQueues{partitioner: p.partitioner(ev.Topic), parts: map[int32]*partQueue{}}
		p.topics[ev.Topic] = tq
	}
	n := int32(len(parts)) //nolint:gosec // G115: partition counts fit
	var choice int32
	if ev.Partition >= 0 {
		if ev.Partition >= n {
			return p.fail(ev, fmt.Errorf("event %s of %s: partition_column value %d but topic %s has %d partitions: %w",
				ev.ID, ev.Table, ev.Partition, ev.Topic, n, errPartitionRange))
		}
		choice = ev.Partition
	} else {
		// One message reused for every event, so that asking the
		// partitioner allocates nothing.
		p.msg.Topic, p.msg.Key = ev.Topic, nil
		if ev.Key != nil {
			p.key = ev.Key
			p.msg.Key = &p.key
		}
		if choice, err = tq.partitioner.Partition(&p.msg, n); err != nil {
			return p.fail(ev, err)
		}
	}
	id := parts[choice]
	q := tq.parts[id]
	if q == nil {
		q = &partQueue{topic: ev.Topic, id: id}
		tq.parts[id] = q
		p.resolve(q, time.Now())
	}
	now := time.Now()
	r := newRecord(ev, now)
	r.slot = p.fl.add(ev, deadLetter)
	q.pending = append(q.pending, r)
	if q.leader != nil {
		p.list(q, r.size, now)
	}
	return nil
}

// resolve finds q's leader, or schedules another look after a backoff.
func (p *Producer) resolve(q *partQueue, now time.Time) {
	conn, err := p.c.leader(q.topic, q.id)
	if err != nil {
		p.retry(q, err, now)
		return
	}
	b := p.brokers[conn]
	if b == nil {
		b = &brokerState{conn: conn}
		p.brokers[conn] = b
	}
	q.leader = b
	q.retryAt = time.Time{}
	for _, r := range q.pending[q.sent:] {
		p.list(q, r.size, now)
	}
}

// list puts q on its leader's ready list and counts size toward the linger.
func (p *Producer) list(q *partQueue, size int, now time.Time) {
	b := q.leader
	if b.bytes == 0 {
		b.since = now
	}
	b.bytes += size
	if !q.listed {
		q.listed = true
		b.ready = append(b.ready, q)
	}
}

// retry schedules q's records to be sent again after fresh metadata.
func (p *Producer) retry(q *partQueue, err error, now time.Time) {
	q.retries++
	if q.failing.IsZero() {
		q.failing = now
	}
	q.lastErr = err
	q.leader = nil
	q.retryAt = now.Add(p.backoff(q.retries))
	p.retrying = append(p.retrying, q)
	p.log.Debug().Err(err).Str("topic", q.topic).Int32("partition", q.id).Int("retries", q.retries).
		Msg("kafka refused a batch for now; sending it again")
}

// retryDue looks up the leaders of the queues whose backoff is over, with
// fresh metadata for their topics, asked for in one request: with the
// brokers away each request waits out sarama's metadata retries.
func (p *Producer) retryDue(now time.Time) error {
	keep := p.retrying[:0]
	var due []*partQueue
	for _, q := range p.retrying {
		if q.retryAt.After(now) {
			keep = append(keep, q)
		} else {
			due = append(due, q)
		}
	}
	clear(p.retrying[len(keep):])
	p.retrying = keep
	var topics []string
	for _, q := range due {
		if now.Sub(q.failing) > p.giveUp {
			return p.fail(q.pending[0].ev, fmt.Errorf("kafka refused it for %s: %w", p.giveUp, q.lastErr))
		}
		if !slices.Contains(topics, q.topic) {
			topics = append(topics, q.topic)
		}
	}
	if len(topics) > 0 {
		if err := p.c.RefreshMetadata(topics...); err != nil {
			// No broker answers: asking each queue's leader would wait
			// out the metadata retries once per partition.
			now = time.Now()
			for _, q := range due {
				p.retry(q, err, now)
			}
			return nil
		}
	}
	now = time.Now()
	for _, q := range due {
		p.resolve(q, now)
	}
	return nil
}

// flush sends a request to every idle broker that has records waiting (and
// whose linger is over), and returns when Run must next look: the end of a
// linger or of a backoff.
func (p *Producer) flush(now time.Time) (time.Time, error) {
	var wake time.Time
	soonest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	for _, b := range p.brokers {
		if b.busy || len(b.ready) == 0 {
			continue
		}
		if p.linger > 0 && b.bytes < flushBytes {
			if due := b.since.Add(p.linger); now.Before(due) {
				soonest(due)
				continue
			}
		}
		if b.throttled.After(now) {
			soonest(b.throttled)
			continue
		}
		if req := p.build(b); req != nil {
			b.busy = true
			if err := b.conn.produce(req); err != nil {
				// Not sent, so nothing of it can be in Kafka.
				if err := p.settle(result{req: req, err: err}); err != nil {
					return time.Time{}, err
				}
			}
		}
	}
	for _, q := range p.retrying {
		soonest(q.retryAt)
	}
	return wake, nil
}

// build takes, for each queue ready on b, a batch of its records not yet
// sent, up to maxBatch bytes each and maxRequestBytes in all.
func (p *Producer) build(b *brokerState) *request {
	var req *request
	total, left := 0, 0
	keep := b.ready[:0]
	for _, q := range b.ready {
		if q.leader != b || q.sent > 0 || len(q.pending) == 0 {
			// Moved to another leader, in flight, or emptied: listed
			// again when it has records for this broker.
			if q.leader != b || len(q.pending) == 0 {
				q.listed = false
				continue
			}
			keep = append(keep, q)
			continue
		}
		if total >= maxRequestBytes {
			keep = append(keep, q)
			for _, r := range q.pending {
				left += r.size
			}
			continue
		}
		n, size := p.batch(q.pending)
		total += size
		q.sent = n
		if req == nil {
			// One request in flight per broker: the last one's lists
			// are free again.
			req = &b.req
			*req = request{b: b, parts: req.parts[:0], batches: req.batches[:0], errs: req.errs[:0]}
		}
		req.parts = append(req.parts, q)
		req.batches = append(req.batches, wireBatch{topic: q.topic, partition: q.id, records: q.pending[:n]})
		if n < len(q.pending) {
			keep = append(keep, q)
			for _, r := range q.pending[n:] {
				left += r.size
			}
		} else {
			q.listed = false
		}
	}
	clear(b.ready[len(keep):])
	b.ready = keep
	b.bytes = left
	if left > 0 {
		b.since = time.Time{} // what is left goes with the next request, lingered already
	}
	if req != nil {
		req.errs = append(req.errs, make([]error, len(req.batches))...)
	}
	return req
}

// batchOverhead is a v2 record batch's header, which the broker counts
// against the topic's max.message.bytes along with the records.
const batchOverhead = 61

// batch counts how many of the first records of rs go in one batch, up to
// maxBatch bytes (at least one record), and their size.
func (p *Producer) batch(rs []*record) (int, int) {
	n, size := 0, 0
	for n < len(rs) && (n == 0 || size+rs[n].size <= p.maxBatch-batchOverhead) {
		size += rs[n].size
		n++
	}
	return n, size
}

// settle applies a request's outcome: acknowledged batches are acked,
// batches refused for now are sent again, and anything else ends Run.
func (p *Producer) settle(res result) error {
	b := res.req.b
	b.busy = false
	if res.req.throttle > 0 {
		// The broker mutes the connection for that long (KIP-219):
		// waiting spares it requests it would only hold.
		b.throttled = time.Now().Add(time.Duration(res.req.throttle) * time.Millisecond)
	}
	if res.err != nil {
		// The connection is broken or unusable: closing it makes the next
		// leader lookup open it afresh.
		_ = b.conn.Close()
	}
	now := time.Now()
	for i, q := range res.req.parts {
		n := q.sent
		q.sent = 0
		err := res.err
		if err == nil {
			err = res.req.errs[i]
		}
		if err == nil {
			for _, r := range q.pending[:n] {
				p.ack.Ack(r.ev.Seq)
				if p.obs != nil {
					p.obs.Published(r.ev, now.Sub(r.at))
				}
				p.fl.settle(r.slot)
			}
			clear(q.pending[:n])
			switch {
			case n < len(q.pending):
				q.pending = q.pending[n:]
			case cap(q.pending) <= 4096:
				// Start the emptied queue over in its array: at everyday
				// rates every batch empties it, and slicing forward would
				// allocate a new one for each record.
				q.pending = q.pending[:0]
			default:
				q.pending = nil // a drain's large array is let go
			}
			q.retries, q.failing = 0, time.Time{}
			if len(q.pending) > 0 && q.leader == b && !q.listed {
				q.listed = true
				b.ready = append(b.ready, q)
			}
			continue
		}
		if retriable(err) && (q.failing.IsZero() || now.Sub(q.failing) <= p.giveUp) {
			if q.leader != nil {
				p.retry(q, err, now)
			}
			continue
		}
		return p.fail(q.pending[0].ev, err)
	}
	return nil
}

// fail is the error that ends Run for ev.
func (p *Producer) fail(ev *decode.Event, err error) error {
	if p.obs != nil {
		p.obs.PublishError(reason(err))
	}
	if uerr := p.unpub.refused(ev, err); uerr != nil {
		return uerr
	}
	return classify(fmt.Errorf("publishing event %s of %s to topic %s: %w", ev.ID, ev.Table, ev.Topic, err))
}

// retriable reports whether a batch refused with err may succeed when sent
// again: the partition is moving or short of replicas, or the connection
// failed. Anything else (a refused topic, an oversized batch, a protocol
// error) is reported.
func retriable(err error) bool {
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		switch kerr {
		case sarama.ErrUnknownTopicOrPartition, sarama.ErrLeaderNotAvailable, sarama.ErrNotLeaderForPartition,
			sarama.ErrRequestTimedOut, sarama.ErrNotEnoughReplicas, sarama.ErrNotEnoughReplicasAfterAppend,
			sarama.ErrKafkaStorageError, sarama.ErrNetworkException, sarama.ErrBrokerNotAvailable,
			sarama.ErrReplicaNotAvailable, sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch,
			sarama.ErrInvalidMessage:
			return true
		}
		return false
	}
	// Transport errors: the request may or may not have been written.
	return !errors.Is(err, sarama.ErrClosedClient)
}

// shutdown waits, a bounded time, for the requests in flight, so that the
// next attempt's records do not overtake them on a new connection, then
// closes the client.
func (p *Producer) shutdown() {
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for p.inFlight() > 0 {
		select {
		case res := <-p.results:
			res.req.b.busy = false
		case <-deadline.C:
			p.log.Warn().Msg("kafka did not answer the requests in flight within 5s; abandoning their unacknowledged events (they will be sent again)")
			close(p.quit)
			_ = p.c.Close()
			return
		}
	}
	close(p.quit)
	_ = p.c.Close()
}

func (p *Producer) inFlight() int {
	n := 0
	for _, b := range p.brokers {
		if b.busy {
			n++
		}
	}
	return n
}
