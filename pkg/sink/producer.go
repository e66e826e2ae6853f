package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	gometrics "github.com/rcrowley/go-metrics"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// Acker receives the sequence number of every event Kafka acknowledged.
type Acker interface {
	Ack(seq uint64)
}

// Observer is told about publishing outcomes, for metrics. It may be nil.
type Observer interface {
	Published(ev *decode.Event, latency time.Duration)
	PublishError(reason string)
}

// Producer publishes events with a sarama AsyncProducer configured for
// at-least-once delivery in order per partition: acks=all, idempotence, one
// request in flight per broker and retries for as long as the process lives.
type Producer struct {
	ap  sarama.AsyncProducer
	ack Acker
	obs Observer
	log zerolog.Logger

	// client is the producer's own, so that closing it can stop the
	// producer from sending anything more; see halt.
	client sarama.Client
	halted sync.Once

	unpub *unpublishable // kafka.on_unpublishable, see unpublishable.go
	fl    *flight        // Run's records in flight (Run is called once)
}

// item carries an event through sarama. Embedding the message in one struct
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
	slot       uint16 // flight's key bucket + 1; 0: not counted per key
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

// SaramaConfig builds the producer configuration from the relay's Kafka config.
func SaramaConfig(k config.Kafka) (*sarama.Config, error) {
	// sarama's built-in go-metrics histograms cost several percent of CPU per
	// record; the relay exports its own Prometheus metrics instead.
	gometrics.UseNilMetrics = true
	sc := sarama.NewConfig()
	// config.Load has validated k; these calls only convert it, and report
	// the same problems for a Kafka config that did not come through Load.
	v, err := k.SaramaVersion()
	if err != nil {
		return nil, fault.Fatal(err)
	}
	sc.Version = v
	sc.ClientID = k.ClientID
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	// sarama allocates retry state per partition proportional to Retry.Max, so
	// "forever" is a bounded count here; when a record exhausts it the pipeline
	// restarts from the slot, which keeps retrying for as long as we live.
	sc.Producer.Retry.Max = 120
	sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		d := 50 * time.Millisecond << min(retries, 5)
		return min(d, time.Second)
	}
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.MaxMessageBytes = k.MaxMessageBytes
	sc.Producer.Timeout = 10 * time.Second
	sc.ChannelBufferSize = 4096
	// A record waits up to the linger for the records behind it, so that a
	// produce request carries several: the broker handles fewer requests
	// (half the broker CPU at a thousand events a second), and a machine
	// short of cores does not queue up requests of one record each behind
	// the one in flight. A batch that is already large goes at once rather
	// than waiting out the timer, which keeps a backlog drain at full speed.
	if k.Linger > 0 {
		sc.Producer.Flush.Frequency = k.Linger
		sc.Producer.Flush.Bytes = flushBytes
	}
	sc.Metadata.Full = false
	sc.Metadata.Retry.Max = 10
	sc.Metadata.Retry.Backoff = 500 * time.Millisecond
	switch k.Partitioner {
	case config.PartitionerFNV1a:
		sc.Producer.Partitioner = explicitOr(sarama.NewHashPartitioner)
	case config.PartitionerRandom:
		sc.Producer.Partitioner = explicitOr(sarama.NewRandomPartitioner)
	default:
		sc.Producer.Partitioner = explicitOr(newMurmur2Partitioner)
	}
	switch k.Compression {
	case config.CompressionGzip:
		sc.Producer.Compression = sarama.CompressionGZIP
	case config.CompressionSnappy:
		sc.Producer.Compression = sarama.CompressionSnappy
	case config.CompressionLZ4:
		sc.Producer.Compression = sarama.CompressionLZ4
	case config.CompressionZstd:
		sc.Producer.Compression = sarama.CompressionZSTD
	}
	if k.TLS.Enabled {
		tc, err := k.TLS.ClientConfig()
		if err != nil {
			return nil, fault.Fatal(err)
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	if k.SASL.Mechanism != "" {
		if err := configureSASL(sc, k.SASL); err != nil {
			return nil, fault.Fatal(err)
		}
	}
	if err := sc.Validate(); err != nil {
		return nil, fault.Fatal(fmt.Errorf("kafka producer config: %w", err))
	}
	return sc, nil
}

// flushBytes is the batch size that is sent without waiting out the linger.
const flushBytes = 64 << 10

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

// dial tests the credentials once (see Handshake) and connects a client of
// the caller's own: each producer closes its client to stop it for good.
func dial(k config.Kafka, sc *sarama.Config, purpose string) (sarama.Client, error) {
	if err := Handshake(k, sc); err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(k.Brokers, sc)
	if err != nil {
		return nil, classify(fmt.Errorf("connecting to kafka brokers %v%s: %w", k.Brokers, purpose, err))
	}
	return client, nil
}

// closeWithin closes ap and waits, at most d, for the goroutines in wg that
// drain its Successes and Errors. sarama retries what it holds for as long
// as it was asked to, so with the brokers away closing could take forever.
func closeWithin(ap sarama.AsyncProducer, wg *sync.WaitGroup, d time.Duration) bool {
	ap.AsyncClose()
	closed := make(chan struct{})
	go func() { wg.Wait(); close(closed) }()
	select {
	case <-closed:
		return true
	case <-time.After(d):
		return false
	}
}

// NewProducer connects to the brokers. Failing to reach them is retryable.
func NewProducer(k config.Kafka, ack Acker, obs Observer, log zerolog.Logger) (*Producer, error) {
	sc, err := SaramaConfig(k)
	if err != nil {
		return nil, err
	}
	// Flag weak settings, and test the credentials once before sarama's
	// producer-id retries can turn a wrong password into dozens of failed
	// logins (see Handshake).
	warnInsecure(k, log)
	warnDeprecated(k, log)
	client, err := dial(k, sc, "")
	if err != nil {
		return nil, err
	}
	ap, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		client.Close()
		return nil, classify(fmt.Errorf("connecting to kafka brokers %v: %w", k.Brokers, err))
	}
	return &Producer{ap: ap, client: client, ack: ack, obs: obs, log: log, unpub: newUnpublishable(k, obs, log, client.Partitions), fl: newFlight()}, nil
}

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

// Run publishes events from in until in is closed and every event sent is
// acknowledged, or until ctx ends (abandoning what is in flight: the slot was
// not confirmed past it, so it is sent again after a restart). Each acked
// event's sequence number goes to the Acker. A failed event ends Run with an
// error: retrying it here could reorder it behind later events of its key.
// Run is called once per Producer; the pipeline builds a new one for every
// attempt.
func (p *Producer) Run(ctx context.Context, in <-chan *decode.Event) error {
	var (
		wg      sync.WaitGroup
		fl      = p.fl
		failure = make(chan error, 1)
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for msg := range p.ap.Successes() {
			it := msg.Metadata.(*item)
			p.ack.Ack(it.ev.Seq)
			if p.obs != nil {
				p.obs.Published(it.ev, time.Since(it.sent))
			}
			fl.settle(it)
		}
	}()
	go func() {
		defer wg.Done()
		for perr := range p.ap.Errors() {
			// sarama gives up on a record but goes on sending the later
			// records of its partition (it bumps the idempotent epoch), which
			// would put them in Kafka ahead of the failed one when the
			// pipeline re-sends it: stop this producer before anything more
			// leaves.
			p.halt()
			it := perr.Msg.Metadata.(*item)
			err := p.unpub.refused(it.ev, perr.Err)
			if err == nil {
				err = classify(fmt.Errorf("publishing event %s of %s to topic %s: %w", it.ev.ID, it.ev.Table, it.ev.Topic, perr.Err))
			}
			if p.obs != nil {
				p.obs.PublishError(reason(perr.Err))
			}
			select {
			case failure <- err:
			default:
			}
			fl.settle(it)
		}
	}()
	defer func() {
		// Whatever is left after the wait is unconfirmed and will be sent
		// again after the restart.
		if !closeWithin(p.ap, &wg, 5*time.Second) {
			p.log.Warn().Msg("kafka producer did not close within 5s; abandoning its unacknowledged events (they will be sent again)")
		}
		// An abandoned producer must not deliver its retries behind the
		// next attempt's records (out of order, skipping the failed ones).
		p.halt()
	}()

	input := p.ap.Input()
	var runErr error
loop:
	for {
		select {
		case ev, ok := <-in:
			if !ok {
				fl.close()
				break loop
			}
			// An event that can never be published as it is stops the relay
			// or is replaced by its dead letter record, here, in its place
			// in the stream.
			out, err := p.unpub.check(ev)
			if err != nil {
				runErr = err
				break loop
			}
			deadLetter := out != ev
			if deadLetter && out.Key != nil {
				// The dead letter waits for its key's earlier records: one of
				// them failing later would be dead-lettered after the
				// restart, behind this one.
				for fl.keyBusy(out.Key) {
					select {
					case <-fl.settled:
					case runErr = <-failure:
						break loop
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			it := newItem(out, time.Now())
			fl.add(it, deadLetter)
			select {
			case input <- &it.msg:
			case runErr = <-failure:
				break loop
			case <-ctx.Done():
				return ctx.Err()
			}
		case runErr = <-failure:
			break loop
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if runErr != nil {
		return runErr
	}
	select {
	case <-fl.done:
		return nil
	case err := <-failure:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// halt closes the producer's client: no new connection or metadata request
// succeeds after it, so the producer can send nothing more and fails what it
// still holds.
func (p *Producer) halt() {
	p.halted.Do(func() { _ = p.client.Close() })
}

// errPartitionRange marks an explicit partition the topic does not have
// (according to the producer's metadata); see unpublishable.refused.
var errPartitionRange = errors.New("partition out of range")

// classify marks errors that retrying cannot fix as fatal. A refusal of a
// cluster-wide permission stops the relay whatever kafka.on_unpublishable
// says: it concerns every topic, the dead letter topic included, so there is
// no event to set aside.
func classify(err error) error {
	switch {
	case errors.Is(err, sarama.ErrMessageSizeTooLarge), errors.Is(err, sarama.ErrMessageTooLarge):
		return fault.Fatal(fmt.Errorf("%w (raise kafka.max_message_bytes and the topic's max.message.bytes, or shrink the event)", err))
	case errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return fault.Fatal(fmt.Errorf("%w: the relay's principal lacks a cluster permission; its idempotent producer needs IdempotentWrite on the cluster on Kafka before 3.0 (Write on the topics from 3.0)", err))
	case errors.Is(err, sarama.ErrSASLAuthenticationFailed), errors.Is(err, sarama.ErrTopicAuthorizationFailed),
		errors.Is(err, sarama.ErrInvalidTopic):
		return fault.Fatal(err)
	}
	return err
}

func reason(err error) string {
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		return kerr.Error()
	}
	switch {
	case errors.Is(err, sarama.ErrOutOfBrokers):
		return "out_of_brokers"
	case errors.Is(err, sarama.ErrMessageTooLarge):
		return "message_too_large"
	}
	return "other"
}
