package sink

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/relay-dev/relay/internal/netio"
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

var nilMetrics sync.Once

// SaramaConfig builds the producer configuration from the relay's Kafka config.
func SaramaConfig(k config.Kafka) (*sarama.Config, error) {
	// sarama's built-in go-metrics histograms cost several percent of CPU per
	// record; the relay exports its own Prometheus metrics instead. Set once:
	// the goroutines of an earlier client's brokers read it.
	nilMetrics.Do(func() { gometrics.UseNilMetrics = true })
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
	// For the transactional producer (sarama's AsyncProducer): sarama
	// allocates retry state per partition proportional to Retry.Max, so
	// "forever" is a bounded count here; when a record exhausts it the
	// pipeline restarts, which keeps retrying for as long as we live. The
	// at-least-once Producer retries by time and uses only the backoff.
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
	// The transactional producer's linger (the at-least-once Producer reads
	// kafka.linger itself): a record waits up to it for the records behind
	// it, so that a produce request carries several and the broker handles
	// fewer. A batch that is already large goes at once rather than waiting
	// out the timer, which keeps a backlog drain at full speed.
	if k.Linger > 0 {
		sc.Producer.Flush.Frequency = k.Linger
		sc.Producer.Flush.Bytes = flushBytes
	}
	// Produce requests and their responses are, with the stream's reads,
	// the relay's most frequent system calls.
	sc.Net.Proxy.Enable = true
	sc.Net.Proxy.Dialer = dialer{sc}
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

// dialer dials a broker the way sarama does without a proxy, reading the
// timeouts when it dials so that later changes to the config apply, and
// wraps the connection with netio.
type dialer struct{ sc *sarama.Config }

func (d dialer) Dial(network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.sc.Net.DialTimeout, KeepAlive: d.sc.Net.KeepAlive, LocalAddr: d.sc.Net.LocalAddr}
	c, err := nd.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return netio.Wrap(c), nil
}
