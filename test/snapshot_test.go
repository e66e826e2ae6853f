package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/relay-dev/relay/internal/devenv"
)

// insertMany commits n events in transactions of batch events, keys spread
// over keys per aggregate type A and B (no key has both types).
func insertMany(t *testing.T, e *env, p *producer, n, batch, keys int) {
	t.Helper()
	conn := e.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		base := done
		err := p.insert(ctx, conn, "public.outbox", k, func(i int) (string, string) {
			j := base + i
			typ := []string{"A", "B"}[j%2]
			return typ, fmt.Sprintf("%s%d", typ, (j/2)%keys)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// relay replay republishes a --where subset through the table's mapping and
// leaves the slot where it was.
func TestReplay(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := e.config("")
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	insertMany(t, e, p, 400, 50, 20)
	e.waitDelivered(400, 60*time.Second, "outbox.event.A", "outbox.event.B")
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("relay exit %d", code)
	}
	before, _ := e.slotLSNs("outbox_relay")

	out, code := runRelay(t, cfg, "replay", "--table", "outbox", "--where", "aggregatetype = 'A'")
	if code != 0 {
		t.Fatalf("relay replay exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "replayed 200 rows of public.outbox") || !strings.Contains(out, "outbox.event.A: 200") {
		t.Errorf("replay summary:\n%s", out)
	}
	after, _ := e.slotLSNs("outbox_relay")
	if after != before {
		t.Errorf("replay moved the slot's confirmed_flush_lsn from %d to %d", before, after)
	}

	recs := e.readAll("outbox.event.A", "outbox.event.B")
	count := map[string]int{}
	for _, rec := range recs {
		count[rec.Headers["id"]]++
	}
	for _, ev := range p.committed() {
		want := 1
		if ev.Type == "A" {
			want = 2
		}
		if count[ev.ID] != want {
			t.Fatalf("event %+v in Kafka %d times, want %d", ev, count[ev.ID], want)
		}
	}
	// The replayed copies, read alone, are a complete history in per-key order.
	var replayed []event
	for _, ev := range p.committed() {
		if ev.Type == "A" {
			replayed = append(replayed, ev)
		}
	}
	seen := map[string]int{}
	var second []devenv.Record
	for _, rec := range recs {
		if seen[rec.Headers["id"]]++; seen[rec.Headers["id"]] == 2 {
			second = append(second, rec)
		}
	}
	if v := check(replayed, second, e.parts, defaultTopic); v.lost+v.duplicates+v.orderViolations+v.misplaced > 0 {
		t.Errorf("replayed copies: %s %v", v, v.problems)
	}

	out, code = runRelay(t, cfg, "replay", "--table", "public.nope")
	if code == 0 || !strings.Contains(out, "not a configured outbox table") {
		t.Errorf("replay of an unconfigured table: exit %d\n%s", code, out)
	}
}

// bulkInsert commits n events in 500-event transactions on one connection,
// keys from keyOf.
func bulkInsert(t *testing.T, e *env, p *producer, n int, keyOf func(i int) (string, string)) {
	t.Helper()
	conn := e.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for done := 0; done < n; done += 500 {
		base := done
		if err := p.insert(ctx, conn, "public.outbox", min(500, n-done), func(i int) (string, string) { return keyOf(base + i) }); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotRows returns the row count of the relay's "snapshot done" log line.
func snapshotRows(t *testing.T, out string) int {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"snapshot complete"`) {
			var m struct {
				Rows int `json:"rows"`
			}
			if err := json.Unmarshal([]byte(line), &m); err == nil {
				return m.Rows
			}
		}
	}
	return -1
}

// TestSnapshotConcurrentWrites is the initial snapshot's contract: 20k rows
// committed before the relay ever ran and 20k more committed while it
// starts, creates its slot and reads the table. Exactly the rows before the
// slot's consistent point come from the snapshot and exactly the later ones
// from the stream: every event once, per-key order intact across the seam.
func TestSnapshotConcurrentWrites(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := newProducer()
	keys := keyed(200, 1)
	bulkInsert(t, e, p, 20000, keys)

	// The second half starts before the relay and goes on after its slot
	// exists, so the consistent point falls among concurrent commits.
	errc := make(chan error, 1)
	slotMade := make(chan struct{})
	go func() {
		conn, err := pgx.Connect(context.Background(), e.url())
		if err != nil {
			errc <- err
			return
		}
		defer conn.Close(context.Background())
		ctx := context.Background()
		for i := 0; i < 200; i++ {
			if i == 50 {
				<-slotMade
			}
			if err := p.insert(ctx, conn, "public.outbox", 100, func(j int) (string, string) { return keys(20000 + i*100 + j) }); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	r := e.startRelay(e.config("snapshot: {batch_size: 1000}\n"))
	waitFor(t, 60*time.Second, "the relay's slot", func() bool {
		var n int
		return e.scan("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_relay'", nil, &n) == nil && n == 1
	})
	close(slotMade)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	committed := p.committed()
	if len(committed) != 40000 {
		t.Fatalf("committed %d events", len(committed))
	}
	v := e.waitAllDelivered(committed, 3*time.Minute)
	v.mustHold(t, true)
	n := snapshotRows(t, r.out.String())
	if n < 20000 || n >= 40000 {
		t.Fatalf("the snapshot published %d rows: the consistent point should fall among the concurrent commits", n)
	}
	t.Logf("%s; %d rows from the snapshot, %d from the stream", v, n, 40000-n)
	// A restart neither snapshots again nor re-sends anything.
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("relay exit %d", code)
	}
	r2 := e.startRelay(e.config(""))
	e.waitStreaming("outbox_relay")
	bulkInsert(t, e, p, 100, keys)
	v = e.waitAllDelivered(p.committed(), time.Minute)
	v.mustHold(t, true)
	if strings.Contains(r2.out.String(), "snapshot") && snapshotRows(t, r2.out.String()) > 0 {
		t.Fatalf("the restarted relay snapshotted again:\n%s", r2.out.String())
	}
}

// TestSnapshotKill9 stops the relay with SIGTERM and then kills it in the
// middle of its initial snapshot: one topic's produce requests are refused,
// so the snapshot cannot finish while the others' rows reach Kafka. The restarted relay must publish every
// row (the snapshot again: duplicates of the part already published are
// allowed) and every event written meanwhile, with per-key order intact.
func TestSnapshotKill9(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := newProducer()
	bulkInsert(t, e, p, 20000, keyed(200, 2))
	fault := e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.Customer", Err: kerr.NotEnoughReplicas, Count: -1})
	removed := false
	defer func() {
		if !removed {
			fault.Remove()
		}
	}()
	cfg := strings.Replace(e.config("snapshot: {batch_size: 500}\n"), "pipeline:\n", "pipeline:\n  max_inflight_events: 2000\n", 1)
	cfg = strings.Replace(cfg, "drain_timeout: 20s", "drain_timeout: 2s", 1)
	// First a SIGTERM in the middle: a clean stop, exit 0, the snapshot
	// unfinished.
	r := e.startRelay(cfg)
	e.waitDelivered(500, 60*time.Second, "outbox.event.Order", "outbox.event.Invoice")
	if code := r.stop(60 * time.Second); code != 0 {
		t.Fatalf("SIGTERM during the snapshot: exit %d", code)
	}
	if !strings.Contains(r.out.String(), "stopping before it finished") {
		t.Errorf("the relay did not say it stopped mid-snapshot:\n%s", tail(r.out.String(), 20))
	}
	// Then a kill -9 in the middle of the resumed snapshot.
	r = e.startRelay(cfg)
	e.waitDelivered(1000, 60*time.Second, "outbox.event.Order", "outbox.event.Invoice")
	w := e.startSteadyWriter(p, 20*time.Millisecond)
	w.waitCommitted(20050, 30*time.Second)
	r.kill()
	fault.Remove()
	removed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	got, _ := devenv.CountRecords(ctx, e.kafka.Addr(), outboxTopics...)
	cancel()
	if got >= 20000 {
		t.Fatalf("Kafka held %d records at the kill: the snapshot was not interrupted", got)
	}
	t.Logf("killed mid-snapshot with %d records in Kafka", got)
	r = e.startRelay(cfg)
	w.waitCommitted(20300, 60*time.Second)
	w.halt()
	v := e.waitAllDelivered(p.committed(), 3*time.Minute)
	v.mustHold(t, false)
	t.Logf("%s after a kill -9 mid-snapshot", v)
	if !strings.Contains(r.out.String(), "snapshot") {
		t.Errorf("the restarted relay did not say it resumes the snapshot:\n%s", tail(r.out.String(), 20))
	}
}

// TestSnapshotInitialOnlyThenNewTable: initial_only publishes what the
// outbox holds and exits 0, leaving the slot at its consistent point; the
// next run streams from there without a gap or a duplicate. A table added to
// the config later is snapshotted on its own, the first one is not again.
func TestSnapshotInitialOnlyThenNewTable(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := newProducer()
	bulkInsert(t, e, p, 3000, keyed(50, 3))
	out, code := runRelay(t, e.config("snapshot: {mode: initial_only}\n"), "run")
	if code != 0 {
		t.Fatalf("initial_only exit %d:\n%s", code, tail(out, 30))
	}
	if n := snapshotRows(t, out); n != 3000 {
		t.Fatalf("initial_only published %d rows, want 3000:\n%s", n, tail(out, 30))
	}
	e.waitAllDelivered(p.committed(), time.Minute).mustHold(t, true)

	bulkInsert(t, e, p, 500, keyed(50, 4)) // after the consistent point: the stream's
	e.exec(devenv.OutboxDDL("public.outbox2"), e.db)
	conn := e.connect()
	p2 := newProducer()
	if err := p2.insert(context.Background(), conn, "public.outbox2", 200, keyed(10, 5)); err != nil {
		t.Fatal(err)
	}
	r := e.startRelay(e.config("outbox:\n  - table: public.outbox\n  - table: public.outbox2\n    topic: second.${routedByValue}\n"))
	e.waitAllDelivered(p.committed(), time.Minute).mustHold(t, true)
	recs := e.readAll(allTopics("second.")...)
	if v := check(p2.committed(), recs, e.parts, func(ev event) string { return "second." + ev.Type }); v.lost+v.duplicates+v.orderViolations+v.misplaced > 0 {
		t.Fatalf("the added table's rows: %s %v", v, v.problems)
	}
	if n := snapshotRows(t, r.out.String()); n != 200 {
		t.Fatalf("the added table's snapshot published %d rows, want 200", n)
	}
}

// TestSnapshotExactlyOnce: with kafka.delivery exactly_once the snapshot's
// records go through Kafka transactions like streamed ones, each carrying the
// snapshot state in its progress record. A read_committed consumer sees
// every row once, and a restart reads nothing again.
func TestSnapshotExactlyOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := newProducer()
	keys := keyed(100, 6)
	bulkInsert(t, e, p, 10000, keys)
	r := e.startRelay(e.config("snapshot: {batch_size: 1000}\n"), exactlyOnce...)
	e.waitStreaming("outbox_relay")
	bulkInsert(t, e, p, 2000, func(i int) (string, string) { return keys(10000 + i) })
	e.waitAllCommitted(p.committed(), 2*time.Minute).mustHold(t, true)
	if n := snapshotRows(t, r.out.String()); n < 10000 {
		t.Fatalf("the snapshot published %d rows", n)
	}
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("relay exit %d", code)
	}
	r = e.startRelay(e.config(""), exactlyOnce...)
	e.waitStreaming("outbox_relay")
	bulkInsert(t, e, p, 100, keys)
	e.waitAllCommitted(p.committed(), time.Minute).mustHold(t, true)
	if n := snapshotRows(t, r.out.String()); n > 0 {
		t.Fatalf("the restarted relay snapshotted %d rows again", n)
	}
}

// TestSnapshotOrderBy: once rows are deleted and VACUUM lets new rows reuse
// the space, physical order is no longer insertion order; snapshot.order_by
// on a growing column keeps per-key order anyway (without it this test sees
// about 2000 order violations).
func TestSnapshotOrderBy(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec("ALTER TABLE public.outbox ADD COLUMN seq bigserial", e.db)
	p := newProducer()
	keys := keyed(20, 7)
	bulkInsert(t, e, p, 3000, keys)
	// The oldest third is pruned and its space reused by later rows.
	old := p.committed()[:1000]
	ids := make([]string, len(old))
	for i, ev := range old {
		ids[i] = ev.ID
	}
	ctx := context.Background()
	conn := e.connect()
	if _, err := conn.Exec(ctx, "DELETE FROM public.outbox WHERE id = ANY($1::uuid[])", ids); err != nil {
		t.Fatal(err)
	}
	e.exec("VACUUM public.outbox", e.db)
	q := newProducer()
	for _, ev := range p.committed()[1000:] {
		k := ev.Table + "/" + ev.Key
		q.seq[k]++
		ev.Seq = q.seq[k]
		q.events = append(q.events, ev)
	}
	bulkInsert(t, e, q, 1000, func(i int) (string, string) { return keys(3000 + i) })
	var physicalSorted bool
	if err := e.scan(`SELECT bool_and(s >= prev) FROM (SELECT seq AS s, lag(seq, 1, 0) OVER () AS prev FROM (SELECT seq FROM public.outbox) t) u`, nil, &physicalSorted); err != nil {
		t.Fatal(err)
	}
	if physicalSorted {
		t.Fatal("physical order still follows insertion order: the test would prove nothing")
	}
	e.startRelay(e.config("outbox:\n  - table: public.outbox\n    snapshot: {order_by: seq}\n"))
	e.waitAllDelivered(q.committed(), 2*time.Minute).mustHold(t, true)
}
