package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/relay-dev/relay/internal/devenv"
)

// insertEvent commits one event and returns its id. shard is the
// partition_column value (nil: none).
func (e *env) insertEvent(aggType, key string, shard any) string {
	e.t.Helper()
	conn := e.connect()
	var id string
	err := conn.QueryRow(context.Background(), `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload, shard)
		VALUES ($1, $2, 'Created', jsonb_build_object('key', $2::text), $3) RETURNING id::text`, aggType, key, shard).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// unpublishableEnv is an env whose outbox has a shard column, for
// partition_column.
func unpublishableEnv(t *testing.T) *env {
	e := newEnv(t, envOpts{})
	e.exec("ALTER TABLE public.outbox ADD COLUMN shard int", e.db)
	return e
}

const dlConfig = "  on_unpublishable: dead_letter\n  dead_letter_topic: relay.dead-letter\n"

// idsIn returns the id headers of the records on topics, with their records.
func (e *env) idsIn(topics ...string) map[string]devenv.Record {
	e.t.Helper()
	ids := map[string]devenv.Record{}
	for _, r := range e.readAll(topics...) {
		ids[r.Headers["id"]] = r
	}
	return ids
}

// waitIDs waits until every id is on one of topics.
func (e *env) waitIDs(what string, ids []string, topics ...string) {
	e.t.Helper()
	waitFor(e.t, 60*time.Second, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		recs, err := devenv.ReadAll(ctx, e.kafka.Addr(), topics...)
		if err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, r := range recs {
			seen[r.Headers["id"]] = true
		}
		for _, id := range ids {
			if !seen[id] {
				return false
			}
		}
		return true
	})
}

// expectStop waits for the relay to exit on its own, non-zero, with a last
// line holding every want.
func expectStop(t *testing.T, r *relay, wants ...string) {
	t.Helper()
	code, out := r.wait(60 * time.Second)
	if code == 0 {
		t.Fatalf("relay exited 0:\n%s", tail(out, 10))
	}
	last := lastLine(out)
	for _, want := range wants {
		if !strings.Contains(last, want) {
			t.Errorf("last line lacks %q: %s", want, last)
		}
	}
}

// TestUnpublishableTopicNames routes events to topic names Kafka refuses
// (kfake would accept them, so the relay must refuse them itself): a slash,
// and a 300-character aggregatetype. Under on_unpublishable: stop the relay
// exits naming the event, table and topic, and neither that event nor any
// after it is delivered or confirmed: restarted under dead_letter on the same
// slot, the relay sends it to the dead letter topic, with the reason, and
// delivers the later events.
func TestUnpublishableTopicNames(t *testing.T) {
	e := unpublishableEnv(t)
	long := strings.Repeat("A", 300)
	const topic = "outbox.event.Order"

	r := e.startRelay(e.config(""))
	e.waitStreaming("outbox_relay")
	ok1 := e.insertEvent("Order", "o-1", nil)
	bad1 := e.insertEvent("Order/Created", "o-2", nil)
	ok2 := e.insertEvent("Order", "o-2", nil)
	expectStop(t, r, "event "+bad1+" of public.outbox", `topic "outbox.event.Order/Created"`, "not a legal Kafka topic name",
		"kafka.on_unpublishable is stop", "kafka.on_unpublishable: dead_letter")
	if ids := e.idsIn(topic); len(ids) != 1 || ids[ok1].Topic == "" {
		t.Fatalf("under stop %s holds %v, want only the event before the illegal one (%s)", topic, ids, ok1)
	}

	// dead_letter on the same slot: bad1 was not confirmed past, so it comes
	// again and is set aside; ok2 behind it and later events flow.
	r = e.startRelay(e.secConfig("", dlConfig, ""))
	e.waitStreaming("outbox_relay")
	bad2 := e.insertEvent(long, "o-3", nil)
	ok3 := e.insertEvent("Order", "o-3", nil)
	e.waitIDs("the legal events", []string{ok1, ok2, ok3}, topic)
	e.waitIDs("both dead letters", []string{bad1, bad2}, "relay.dead-letter")
	dead := e.idsIn("relay.dead-letter")
	for _, want := range []struct{ id, key, topic string }{{bad1, "o-2", "outbox.event.Order/Created"}, {bad2, "o-3", "outbox.event." + long}} {
		d := dead[want.id]
		if string(d.Key) != want.key || d.Headers["reason"] != "invalid_topic" || d.Headers["original-topic"] != want.topic ||
			d.Headers["table"] != "public.outbox" || d.Headers["type"] != "Created" || !strings.Contains(d.Headers["error"], "not a legal Kafka topic name") ||
			string(d.Value) != fmt.Sprintf(`{"key": %q}`, want.key) {
			t.Errorf("dead letter of %s: key %q, value %s, headers %v", want.id, d.Key, d.Value, d.Headers)
		}
	}
	if len(dead) != 2 {
		t.Errorf("%d dead letter records, want 2", len(dead))
	}
	if code := r.stop(30 * time.Second); code != 0 {
		t.Errorf("relay exited %d after SIGTERM", code)
	}

	// And the 300-character name under stop.
	r = e.startRelay(e.config(""))
	e.waitStreaming("outbox_relay")
	bad3 := e.insertEvent(long, "o-4", nil)
	ok4 := e.insertEvent("Order", "o-4", nil)
	expectStop(t, r, "event "+bad3+" of public.outbox", fmt.Sprintf("topic %q", "outbox.event."+long), "not a legal Kafka topic name")
	if _, ok := e.idsIn(topic)[ok4]; ok {
		t.Errorf("event %s, after the illegal one, was delivered under stop", ok4)
	}
}

// TestUnpublishablePartition sets an explicit partition (partition_column)
// that the topic (3 partitions) lacks. The producer's partitioner finds it;
// the relay restarts from the slot, checks the topic's partitions afresh and
// sends the event to the dead letter topic in its place; the events around
// it land on their partitions.
func TestUnpublishablePartition(t *testing.T) {
	e := unpublishableEnv(t)
	const topic = "outbox.event.Order"
	r := e.startRelay(e.secConfig("", dlConfig, "outbox:\n  - table: public.outbox\n    partition_column: shard\n"))
	e.waitStreaming("outbox_relay")
	ok1 := e.insertEvent("Order", "o-1", 1)
	bad := e.insertEvent("Order", "o-1", 7)
	ok2 := e.insertEvent("Order", "o-1", 2)
	ok3 := e.insertEvent("Order", "o-2", nil)
	e.waitIDs("the events with a partition that exists", []string{ok1, ok2, ok3}, topic)
	e.waitIDs("the dead letter", []string{bad}, "relay.dead-letter")
	ids := e.idsIn(topic)
	if ids[ok1].Partition != 1 || ids[ok2].Partition != 2 || ids[ok3].Partition != javaPartition([]byte("o-2"), e.parts) {
		t.Errorf("partitions: %d, %d, %d; want 1, 2 and murmur2's", ids[ok1].Partition, ids[ok2].Partition, ids[ok3].Partition)
	}
	if _, ok := ids[bad]; ok {
		t.Error("the event for partition 7 reached the topic")
	}
	d := e.idsIn("relay.dead-letter")[bad]
	if d.Headers["reason"] != "partition_out_of_range" || d.Headers["original-topic"] != topic ||
		!strings.Contains(d.Headers["error"], "partition_column value 7 but topic outbox.event.Order has 3 partitions") {
		t.Errorf("dead letter headers %v", d.Headers)
	}
	if code := r.stop(30 * time.Second); code != 0 {
		t.Errorf("relay exited %d after SIGTERM", code)
	}
}

// TestUnpublishableRefusedTopic has the broker refuse one topic
// (TOPIC_AUTHORIZATION_FAILED on produce, as a missing Write ACL does).
// Under stop the relay exits naming the event, table and topic; under
// dead_letter that topic's events go to the dead letter topic, each in its
// place, and the other topics' flow.
func TestUnpublishableRefusedTopic(t *testing.T) {
	e := unpublishableEnv(t)
	e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.Secret", Err: kerr.TopicAuthorizationFailed, Count: -1})
	const topic = "outbox.event.Order"

	r := e.startRelay(e.config(""))
	e.waitStreaming("outbox_relay")
	ok1 := e.insertEvent("Order", "o-1", nil)
	e.waitIDs("the first event", []string{ok1}, topic)
	s1 := e.insertEvent("Secret", "s-1", nil)
	expectStop(t, r, "event "+s1+" of public.outbox", `topic "outbox.event.Secret"`, "refused the topic", "grant", "kafka.on_unpublishable: dead_letter")

	r = e.startRelay(e.secConfig("", dlConfig, ""))
	e.waitStreaming("outbox_relay")
	ok2 := e.insertEvent("Order", "o-2", nil)
	s2 := e.insertEvent("Secret", "s-2", nil)
	ok3 := e.insertEvent("Order", "o-3", nil)
	e.waitIDs("the events of the other topic", []string{ok1, ok2, ok3}, topic)
	e.waitIDs("the refused topic's events as dead letters", []string{s1, s2}, "relay.dead-letter")
	for id, d := range e.idsIn("relay.dead-letter") {
		if d.Headers["reason"] != "topic_authorization_failed" || d.Headers["original-topic"] != "outbox.event.Secret" ||
			!strings.Contains(d.Headers["error"], "kafka refused the topic") {
			t.Errorf("dead letter of %s: headers %v", id, d.Headers)
		}
	}
	if code := r.stop(30 * time.Second); code != 0 {
		t.Errorf("relay exited %d after SIGTERM", code)
	}
}

// TestUnpublishableClusterAuthorization: CLUSTER_AUTHORIZATION_FAILED is
// about the relay's principal, not one topic, so even under dead_letter the
// relay stops instead of sending dead letters.
func TestUnpublishableClusterAuthorization(t *testing.T) {
	e := unpublishableEnv(t)
	e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.Secret", Err: kerr.ClusterAuthorizationFailed, Count: -1})
	r := e.startRelay(e.secConfig("", dlConfig, ""))
	e.waitStreaming("outbox_relay")
	ok1 := e.insertEvent("Order", "o-1", nil)
	e.waitIDs("the first event", []string{ok1}, "outbox.event.Order")
	s1 := e.insertEvent("Secret", "s-1", nil)
	expectStop(t, r, "event "+s1+" of public.outbox", "IdempotentWrite")
	if n := len(e.idsIn("relay.dead-letter")); n != 0 {
		t.Errorf("%d dead letter records, want none", n)
	}
}

// TestUnpublishableCheck: relay check flags the deprecated kafka.oversized
// and checks the dead letter topic like the other fixed topics.
func TestUnpublishableCheck(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := e.secConfig("", "  oversized: dead_letter\n  dead_letter_topic: relay.dead-letter\n", "")
	out, code := runRelay(t, cfg, "check")
	for _, want := range []string{"! kafka.oversized: deprecated", "rename it to kafka.on_unpublishable",
		"✗ topic relay.dead-letter: does not exist (used by kafka.oversized dead_letter"} {
		if !strings.Contains(out, want) {
			t.Errorf("relay check output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("relay check exited %d with the dead letter topic missing, want 1", code)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "relay.dead-letter", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	out, code = runRelay(t, cfg, "check")
	if code != 0 || !strings.Contains(out, "✓ topic relay.dead-letter: exists") {
		t.Errorf("relay check with the dead letter topic created exited %d:\n%s", code, out)
	}
}
