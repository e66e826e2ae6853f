package devenv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The helpers below use franz-go rather than sarama, the relay's own
// client, so that tests check what reached Kafka independently of the code
// under test.

// Record is one record read back from Kafka.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string // the last value wins for repeated keys
	Timestamp time.Time
}

// ReadAll reads every record in topics from the log start to the high
// watermark as of the call, sorted by topic, partition and offset. With no
// topics it reads every non-internal topic. A topic that does not exist has
// no records.
func ReadAll(ctx context.Context, brokers string, topics ...string) ([]Record, error) {
	return read(ctx, brokers, false, topics)
}

// ReadCommitted is ReadAll as a consumer with isolation.level=read_committed
// sees the topics: up to each partition's last stable offset, without the
// records of aborted transactions (or of transactions still open).
func ReadCommitted(ctx context.Context, brokers string, topics ...string) ([]Record, error) {
	return read(ctx, brokers, true, topics)
}

func read(ctx context.Context, brokers string, committed bool, topics []string) ([]Record, error) {
	isolation := kgo.ReadUncommitted()
	if committed {
		isolation = kgo.ReadCommitted()
	}
	cl, err := newClient(brokers)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	parts, err := partitionsOf(ctx, cl, topics)
	if err != nil {
		return nil, err
	}
	starts, err := listOffsets(ctx, cl, parts, -2)
	if err != nil {
		return nil, err
	}
	var ends map[string]map[int32]int64
	if committed {
		ends, err = stableOffsets(ctx, cl, parts)
	} else {
		ends, err = listOffsets(ctx, cl, parts, -1)
	}
	if err != nil {
		return nil, err
	}

	from := map[string]map[int32]kgo.Offset{}
	remaining := 0
	for t, ps := range ends {
		for p, end := range ps {
			if start := starts[t][p]; end > start {
				if from[t] == nil {
					from[t] = map[int32]kgo.Offset{}
				}
				from[t][p] = kgo.NewOffset().At(start)
				remaining++
			}
		}
	}
	if remaining == 0 {
		return nil, nil
	}

	// Control records are kept because transaction markers take offsets
	// too: without them a partition ending in a marker would never seem
	// to reach its high watermark. Under read_committed the record just
	// before the last stable offset is never an aborted one (its
	// transaction's marker comes after it), so the end is still seen.
	cons, err := newClient(brokers, kgo.ConsumePartitions(from), kgo.KeepControlRecords(), kgo.FetchIsolationLevel(isolation))
	if err != nil {
		return nil, err
	}
	defer cons.Close()

	var recs []Record
	for remaining > 0 {
		fetches := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %d partitions not read to their end: %w", strings.Join(topicNames(ends), ","), remaining, err)
		}
		for _, fe := range fetches.Errors() {
			return nil, fmt.Errorf("reading %s partition %d: %w", fe.Topic, fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end := ends[r.Topic][r.Partition]
			if r.Offset >= end {
				return // produced after we looked
			}
			if !r.Attrs.IsControl() {
				recs = append(recs, toRecord(r))
			}
			if r.Offset == end-1 {
				remaining--
			}
		})
	}
	slices.SortFunc(recs, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return recs, nil
}

// Topics lists the non-internal topics on the broker, sorted.
func Topics(ctx context.Context, brokers string) ([]string, error) {
	cl, err := newClient(brokers)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	parts, err := partitionsOf(ctx, cl, nil)
	if err != nil {
		return nil, err
	}
	return topicNames(parts), nil
}

// CountRecords returns the sum of the high watermarks of the topics'
// partitions, without reading. High watermarks count offsets, so
// transaction markers count too; the relay's producer is idempotent but not
// transactional and writes none. A topic that does not exist counts as zero.
func CountRecords(ctx context.Context, brokers string, topics ...string) (int64, error) {
	cl, err := newClient(brokers)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	parts, err := partitionsOf(ctx, cl, topics)
	if err != nil {
		return 0, err
	}
	ends, err := listOffsets(ctx, cl, parts, -1)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, ps := range ends {
		for _, end := range ps {
			n += end
		}
	}
	return n, nil
}

func newClient(brokers string, opts ...kgo.Opt) (*kgo.Client, error) {
	var seeds []string
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			seeds = append(seeds, b)
		}
	}
	if len(seeds) == 0 {
		return nil, errors.New("no kafka brokers given")
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka client for %s: %w", brokers, err)
	}
	return cl, nil
}

// partitionsOf returns the partitions of the existing topics among topics,
// or of every non-internal topic when topics is empty. It never creates
// topics, so looking cannot change what is there.
func partitionsOf(ctx context.Context, cl *kgo.Client, topics []string) (map[string][]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("fetching kafka metadata: %w", err)
	}
	out := map[string][]int32{}
	for _, t := range resp.Topics {
		if t.Topic == nil || t.IsInternal || (len(topics) == 0 && strings.HasPrefix(*t.Topic, "__")) {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				continue
			}
			return nil, fmt.Errorf("fetching kafka metadata for topic %s: %w", *t.Topic, err)
		}
		ps := make([]int32, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ps = append(ps, p.Partition)
		}
		out[*t.Topic] = ps
	}
	return out, nil
}

// listOffsets returns the offset at timestamp ts (-2 log start, -1 high
// watermark) of every partition in parts.
func listOffsets(ctx context.Context, cl *kgo.Client, parts map[string][]int32, ts int64) (map[string]map[int32]int64, error) {
	return listOffsetsIsolated(ctx, cl, parts, ts, 0)
}

// stableOffsets returns the last stable offset of every partition in parts:
// where a read_committed consumer stops, before the first open transaction.
func stableOffsets(ctx context.Context, cl *kgo.Client, parts map[string][]int32) (map[string]map[int32]int64, error) {
	return listOffsetsIsolated(ctx, cl, parts, -1, 1)
}

func listOffsetsIsolated(ctx context.Context, cl *kgo.Client, parts map[string][]int32, ts int64, isolation int8) (map[string]map[int32]int64, error) {
	out := map[string]map[int32]int64{}
	if len(parts) == 0 {
		return out, nil
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = isolation
	for t, ps := range parts {
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = t
		for _, p := range ps {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition = p
			rp.Timestamp = ts
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	// Sharded, because each partition must be asked of its leader.
	for _, shard := range cl.RequestSharded(ctx, req) {
		if shard.Err != nil {
			return nil, fmt.Errorf("listing kafka offsets: %w", shard.Err)
		}
		resp := shard.Resp.(*kmsg.ListOffsetsResponse)
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return nil, fmt.Errorf("listing kafka offsets of %s partition %d: %w", t.Topic, p.Partition, err)
				}
				if out[t.Topic] == nil {
					out[t.Topic] = map[int32]int64{}
				}
				out[t.Topic][p.Partition] = p.Offset
			}
		}
	}
	return out, nil
}

func toRecord(r *kgo.Record) Record {
	rec := Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       r.Key,
		Value:     r.Value,
		Timestamp: r.Timestamp,
	}
	if len(r.Headers) > 0 {
		rec.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			rec.Headers[h.Key] = string(h.Value)
		}
	}
	return rec
}

func topicNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for t := range m {
		names = append(names, t)
	}
	slices.Sort(names)
	return names
}
