package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
)

// ProgressStore keeps the relay's progress records in a compacted Kafka
// topic, on a client of its own so that the event producer failing (and
// closing its client) cannot take the record of what was acked with it.
type ProgressStore struct {
	topic    string
	client   sarama.Client
	conf     *sarama.Config
	writable bool // opened with create: Load may write a probe record

	mu      sync.Mutex // one record at a time on the link
	link    *link      // to partition 0's leader
	results chan result
	quit    chan struct{}
	closed  sync.Once
}

// progressTopicConfig makes the topic keep the newest record per key and
// compact soon: start-up reads back from the end, and a small active
// segment keeps what it reads short.
var progressTopicConfig = map[string]*string{
	"cleanup.policy":            ptr("compact"),
	"segment.ms":                ptr("600000"),
	"min.cleanable.dirty.ratio": ptr("0.1"),
}

func ptr(s string) *string { return &s }

// ErrNoProgressTopic is OpenProgress's answer, without create, when the
// progress topic does not exist.
var ErrNoProgressTopic = errors.New("progress topic does not exist")

// OpenProgress connects to the brokers and, with create, makes sure the
// progress topic exists. Failing to reach the brokers is retryable.
func OpenProgress(k config.Kafka, create bool) (*ProgressStore, error) {
	sc, err := SaramaConfig(k)
	if err != nil {
		return nil, err
	}
	// Records of an aborted exactly-once transaction never happened.
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Return.Errors = true
	// Reads stop at a known offset; closing the consumer waits for the fetch
	// in flight, which past the end lasts MaxWaitTime.
	sc.Consumer.MaxWaitTime = 20 * time.Millisecond
	// This is an attempt's first Kafka connection, so the credential test
	// in dial comes before sarama's retries could turn a wrong password into
	// dozens of failed logins.
	client, err := dial(k, sc, " for the progress topic")
	if err != nil {
		return nil, err
	}
	s := &ProgressStore{topic: k.ProgressTopic, client: client, conf: sc, writable: create,
		results: make(chan result, 1), quit: make(chan struct{})}
	if !create {
		if !s.exists() {
			client.Close()
			return nil, fmt.Errorf("%w: %s", ErrNoProgressTopic, s.topic)
		}
		return s, nil
	}
	if err := s.ensureTopic(); err != nil {
		client.Close()
		return nil, err
	}
	return s, nil
}

func (s *ProgressStore) exists() bool {
	// Asking for every topic, not this one: sarama retries a request for a
	// missing topic for seconds before it says so.
	if err := s.client.RefreshMetadata(); err != nil {
		return false
	}
	topics, err := s.client.Topics()
	return err == nil && slices.Contains(topics, s.topic)
}

// CleanupPolicy returns the topic's cleanup.policy as the brokers describe it.
func (s *ProgressStore) CleanupPolicy() (string, error) {
	admin, err := sarama.NewClusterAdminFromClient(s.client)
	if err != nil {
		return "", err
	}
	results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: s.topic, ConfigNames: []string{"cleanup.policy"}}},
		sarama.DescribeConfigsOptions{})
	if err != nil {
		return "", err
	}
	for _, r := range results {
		if r.Name != s.topic {
			continue
		}
		if r.ErrorCode != sarama.ErrNoError {
			return "", &sarama.DescribeConfigError{Err: r.ErrorCode, ErrMsg: r.ErrorMsg}
		}
		for _, e := range r.Configs {
			if e.Name == "cleanup.policy" {
				return e.Value, nil
			}
		}
	}
	return "", nil
}

func (s *ProgressStore) ensureTopic() error {
	if s.exists() {
		return nil
	}
	admin, err := sarama.NewClusterAdminFromClient(s.client)
	if err != nil {
		return classify(fmt.Errorf("progress topic %s: %w", s.topic, err))
	}
	// Closing the admin would close the shared client.
	err = admin.CreateTopic(s.topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: -1, ConfigEntries: progressTopicConfig}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return classify(fmt.Errorf("creating progress topic %s (kafka.progress_topic; the relay needs CREATE on it, or create it with cleanup.policy=compact and one partition): %w", s.topic, err))
	}
	if err := s.client.RefreshMetadata(s.topic); err != nil {
		return classify(fmt.Errorf("progress topic %s: %w", s.topic, err))
	}
	return nil
}

// Close releases the store's connections.
func (s *ProgressStore) Close() {
	s.closed.Do(func() {
		close(s.quit)
		s.mu.Lock()
		if s.link != nil {
			_ = s.link.Close()
		}
		s.mu.Unlock()
		_ = s.client.Close()
	})
}

// Save writes rec and returns once Kafka acknowledged it (acks=all).
func (s *ProgressStore) Save(ctx context.Context, rec checkpoint.Record) error {
	_, err := s.send(ctx, rec.Key(), rec.Marshal())
	return err
}

// send writes one record to partition 0 and returns its offset once acked.
// It produces straight to the partition's leader on a link of its own, as
// the event producer does, one request and its response, rather than through
// an AsyncProducer's pipeline of goroutines: a record is written every few
// hundred milliseconds for as long as the relay runs. What can pass (a
// leader moving, a broken connection) is tried again with fresh metadata;
// sending a record twice only repeats it.
func (s *ProgressStore) send(ctx context.Context, key, value []byte) (int64, error) {
	var err error
	for i, start := 0, time.Now(); i == 0 || time.Since(start) < progressTimeout; i++ {
		if i > 0 {
			select {
			case <-time.After(min(50*time.Millisecond<<i, time.Second)):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			_ = s.client.RefreshMetadata(s.topic)
		}
		var off int64
		if off, err = s.produce(key, value); err == nil {
			return off, nil
		}
		if !retriable(err) {
			break
		}
	}
	return 0, classify(fmt.Errorf("writing progress record to %s: %w", s.topic, err))
}

// progressTimeout bounds the tries of one record: past it the progress
// writer's error restarts the pipeline, which reports the outage.
const progressTimeout = 10 * time.Second

func (s *ProgressStore) produce(key, value []byte) (int64, error) {
	leader, err := s.client.Leader(s.topic, 0)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.link = relink(s.link, leader.Addr(), s.conf, s.results, s.quit)
	rec := &record{ev: &decode.Event{Key: key, Value: value}, ts: time.Now().Truncate(time.Millisecond)}
	req := &request{batches: []wireBatch{{topic: s.topic, records: []*record{rec}}}, errs: make([]error, 1), offsets: make([]int64, 1)}
	if err := s.link.produce(req); err != nil {
		return 0, err
	}
	select {
	case res := <-s.results:
		if res.err != nil {
			// The connection is broken: the next record opens another.
			_ = s.link.Close()
			return 0, res.err
		}
	case <-s.quit:
		return 0, sarama.ErrClosedClient
	}
	if req.errs[0] != nil {
		return 0, req.errs[0]
	}
	return req.offsets[0], nil
}

// probeKey marks the records Load writes to find the end of the topic; it
// has no '@', so it is never taken for a slot's record.
var probeKey = []byte("relay-load-probe")

// Loaded is what the progress topic holds for a slot.
type Loaded struct {
	Record checkpoint.Record
	Found  bool
	// Others are the newest records of the same slot name under other
	// system identifiers: another database used this slot name and topic.
	Others []checkpoint.Record
}

// Load returns the newest record for slot in the database cluster systemID.
// It reads the topic backwards in growing windows, so its cost follows the
// records written since the last compaction, not the topic's history.
//
// A store opened to write finds the end by writing a probe record first:
// every record acked before Load began lies below the probe, and under
// read_committed a read that stops at the probe's offset is exact whatever
// transaction markers and aborted records lie in between, with no timing
// involved. A read-only store (relay status) can only read to the high
// watermark and end after a quiet moment.
func (s *ProgressStore) Load(ctx context.Context, slot, systemID string) (Loaded, error) {
	var out Loaded
	oldest, err := s.client.GetOffset(s.topic, 0, sarama.OffsetOldest)
	if err != nil {
		return out, classify(fmt.Errorf("reading progress topic %s: %w", s.topic, err))
	}
	var last int64
	exact := s.writable
	if exact {
		if last, err = s.send(ctx, probeKey, []byte("probe")); err != nil {
			return out, err
		}
	} else {
		newest, err := s.client.GetOffset(s.topic, 0, sarama.OffsetNewest)
		if err != nil {
			return out, classify(fmt.Errorf("reading progress topic %s: %w", s.topic, err))
		}
		last = newest - 1
	}
	if last < oldest {
		return out, nil
	}
	consumer, err := sarama.NewConsumerFromClient(s.client)
	if err != nil {
		return out, classify(fmt.Errorf("reading progress topic %s: %w", s.topic, err))
	}
	defer consumer.Close()
	want := string(checkpoint.RecordKey(slot, systemID))
	window := int64(256)
	for from := max(oldest, last-window); ; window *= 4 {
		recs, err := s.readRange(ctx, consumer, from, last, exact)
		if err != nil {
			return out, err
		}
		out = Loaded{}
		others := map[string]checkpoint.Record{}
		decided := false // the newest record or tombstone for want was seen
		for _, m := range recs {
			k := string(m.Key)
			if m.Value == nil {
				// A tombstone deletes the record: nothing older counts.
				decided = decided || k == want
				continue
			}
			if k != want {
				if s2, sys, ok := checkpoint.SplitRecordKey(m.Key); ok && s2 == slot && sys != systemID {
					if r, err := checkpoint.UnmarshalRecord(m.Value); err == nil {
						if _, seen := others[k]; !seen {
							others[k] = r
						}
					}
				}
				continue
			}
			if decided {
				continue
			}
			r, err := checkpoint.UnmarshalRecord(m.Value)
			if err != nil {
				return out, fmt.Errorf("progress topic %s offset %d: %w", s.topic, m.Offset, err)
			}
			out.Record, out.Found, decided = r, true, true
		}
		for _, r := range others {
			out.Others = append(out.Others, r)
		}
		if decided || from == oldest {
			return out, nil
		}
		from = max(oldest, last-window*4)
	}
}

// loadTimeout bounds reading up to the probe: an open transaction of
// another producer holds read_committed readers back until it ends.
const loadTimeout = time.Minute

// readRange returns the records at offsets [from, last], newest first.
// exact reads until last arrives; otherwise the read also ends once nothing
// more arrives for a moment, as transaction markers and aborted records
// leave gaps under read_committed.
func (s *ProgressStore) readRange(ctx context.Context, consumer sarama.Consumer, from, last int64, exact bool) ([]*sarama.ConsumerMessage, error) {
	pc, err := consumer.ConsumePartition(s.topic, 0, from)
	if err != nil {
		return nil, classify(fmt.Errorf("reading progress topic %s: %w", s.topic, err))
	}
	defer pc.Close()
	var got []*sarama.ConsumerMessage
	wait := loadTimeout
	if !exact {
		wait = 5 * time.Second
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case m := <-pc.Messages():
			if m.Offset > last {
				return reverse(got), nil
			}
			if !bytes.Equal(m.Key, probeKey) {
				got = append(got, m)
			}
			if m.Offset >= last {
				return reverse(got), nil
			}
			if !exact {
				timer.Reset(500 * time.Millisecond)
			}
		case cerr := <-pc.Errors():
			return nil, classify(fmt.Errorf("reading progress topic %s: %w", s.topic, cerr.Err))
		case <-timer.C:
			if exact {
				return nil, fmt.Errorf("reading progress topic %s: offset %d not readable within %s (an open transaction of another producer holds read_committed readers back)", s.topic, last, loadTimeout)
			}
			return reverse(got), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func reverse(ms []*sarama.ConsumerMessage) []*sarama.ConsumerMessage {
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms
}
