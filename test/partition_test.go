package test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// partitionedDDL is an outbox partitioned by month of created_at, the usual
// way to drop old outbox rows cheaply. Postgres wants the partition column in
// the primary key.
const partitionedDDL = `
CREATE TABLE public.poutbox (
	id uuid NOT NULL DEFAULT gen_random_uuid(),
	aggregatetype text NOT NULL,
	aggregateid text NOT NULL,
	type text NOT NULL,
	payload jsonb NOT NULL,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE public.poutbox_2026_01 PARTITION OF public.poutbox FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE public.poutbox_2026_02 PARTITION OF public.poutbox FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
`

const partitionedConfig = "outbox:\n  - table: public.poutbox\n"

func month(m int) time.Time { return time.Date(2026, time.Month(m), 10, 12, 0, 0, 0, time.UTC) }

// TestPartitionedOutbox relays a partitioned outbox table configured by its
// own name, through a publication the relay creates. Without
// publish_via_partition_root the rows arrive under the partitions' names and
// the relay confirms past them: every event lost. Then, while the relay
// streams, a partition is created, an existing table is attached as one and
// the oldest is detached, with events written into each new range: a
// partition the publication did not cover would lose its events. Last, the
// relay is restarted against the publication it made: it must come back
// streaming (it used to loop on `relation "poutbox" is already member of
// publication` when the publication listed partitions) and keep relaying.
func TestPartitionedOutbox(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(partitionedDDL, e.db)
	cfg := e.config(partitionedConfig)

	out, code := runRelay(t, cfg, "check")
	if code != 0 {
		t.Fatalf("relay check exited %d:\n%s", code, out)
	}
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	var viaRoot bool
	if err := e.scan("SELECT pubviaroot FROM pg_publication WHERE pubname = 'outbox_relay'", nil, &viaRoot); err != nil || !viaRoot {
		t.Fatalf("publication created without publish_via_partition_root (pubviaroot=%t, %v)", viaRoot, err)
	}

	p := newProducer()
	conn := e.connect()
	ctx := context.Background()
	write := func(txns, per int, at time.Time, salt int) {
		t.Helper()
		for i := 0; i < txns; i++ {
			if err := p.insertAt(ctx, conn, "public.poutbox", per, keyed(50, salt+i), at); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A few thousand events across both partitions.
	write(40, 50, month(1), 0)
	write(40, 50, month(2), 1000)
	v := e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("partitioned outbox: %s", v)
	v.mustHold(t, true)

	// Partition maintenance under load: each step runs while the relay is
	// still working through the events written before it.
	write(20, 50, month(2), 2000)
	e.exec(`CREATE TABLE public.poutbox_2026_03 PARTITION OF public.poutbox FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')`, e.db)
	write(20, 50, month(3), 3000)
	e.exec(`CREATE TABLE public.poutbox_2026_04 (LIKE public.poutbox INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`, e.db)
	// Rows already in the table before it is attached were never outbox
	// events; only what is written through the outbox after counts.
	e.exec(`INSERT INTO public.poutbox_2026_04 (aggregatetype, aggregateid, type, payload, created_at) VALUES ('Before', 'x', 'BeforeCreated', '{}', '2026-04-02')`, e.db)
	e.exec(`ALTER TABLE public.poutbox ATTACH PARTITION public.poutbox_2026_04 FOR VALUES FROM ('2026-04-01') TO ('2026-05-01')`, e.db)
	write(20, 50, month(4), 4000)
	e.exec(`ALTER TABLE public.poutbox DETACH PARTITION public.poutbox_2026_01`, e.db)
	// The detached table is an ordinary table now, not part of the outbox.
	e.exec(`INSERT INTO public.poutbox_2026_01 (aggregatetype, aggregateid, type, payload, created_at) VALUES ('Detached', 'x', 'DetachedCreated', '{}', '2026-01-02')`, e.db)
	write(20, 50, month(3), 5000)
	write(20, 50, month(4), 6000)
	v = e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("after creating, attaching and detaching partitions: %s", v)
	v.mustHold(t, true)
	for _, rec := range e.readAll("outbox.event.Before", "outbox.event.Detached") {
		t.Errorf("a row written outside the outbox was relayed: topic %s key %q", rec.Topic, rec.Key)
	}

	// A restart against the publication the relay made.
	if code := r.stop(60 * time.Second); code != 0 {
		t.Fatalf("relay exited %d after SIGTERM", code)
	}
	r = e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	write(10, 50, month(2), 7000)
	write(10, 50, month(4), 8000)
	v = e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("after a restart: %s", v)
	v.mustHold(t, true)
	r.mustBeRunning()
	if strings.Contains(r.out.String(), "already member") {
		t.Errorf("restart tried to add the table to the publication again:\n%s", tail(r.out.String(), 20))
	}
}

// TestPartitionedOutboxPublicationWithoutRoot gives the relay a publication
// made by hand without publish_via_partition_root. relay check must fail
// on it and relay run must refuse to start, both with the ALTER PUBLICATION
// that fixes it (the relay used to add the table again, fail with "already
// member of publication" and retry for ever); after the fix it relays.
func TestPartitionedOutboxPublicationWithoutRoot(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(partitionedDDL, e.db)
	e.exec(`CREATE PUBLICATION outbox_relay FOR TABLE public.poutbox WITH (publish = 'insert')`, e.db)
	cfg := e.config(partitionedConfig)
	const fix = `ALTER PUBLICATION "outbox_relay" SET (publish_via_partition_root = true)`

	out, code := runRelay(t, cfg, "check")
	t.Logf("relay check:\n%s", out)
	bad := strings.Join(failedLines(out), "\n")
	if code == 0 || !strings.Contains(bad, "✗ publication outbox_relay: publish_via_partition_root is off") || !strings.Contains(out, "fix: "+fix) {
		t.Errorf("relay check exited %d without a ✗ for publish_via_partition_root and the fix %q:\n%s", code, fix, out)
	}

	r := e.startRelay(cfg)
	code, out = r.wait(60 * time.Second)
	last := lastLine(out)
	if code == 0 || !strings.Contains(last, "public.poutbox is partitioned") || !strings.Contains(last, fix) {
		t.Fatalf("relay run exited %d; want a start-up error naming the table and %q, got: %s", code, fix, last)
	}
	if strings.Contains(out, "already member") {
		t.Errorf("relay tried to add the table to the publication again:\n%s", tail(out, 20))
	}

	e.exec(fix, e.db)
	if out, code := runRelay(t, cfg, "check"); code != 0 {
		t.Errorf("relay check exited %d after the fix:\n%s", code, out)
	}
	r = e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	conn := e.connect()
	for i := 0; i < 20; i++ {
		if err := p.insertAt(context.Background(), conn, "public.poutbox", 50, keyed(50, i), month(1+i%2)); err != nil {
			t.Fatal(err)
		}
	}
	v := e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("after the fix: %s", v)
	v.mustHold(t, true)
	r.mustBeRunning()
}

// TestPartitionedOutboxViaRootToggled turns publish_via_partition_root off
// and on again, once while the relay is stopped and once while it streams.
// Postgres reads the publication as of each change, so the rows written
// while it was off arrive under their partitions' names even after it is
// back on: a relay that ignored them would confirm past them (lost > 0).
// While streaming, the periodic publication check must also stop the relay,
// with the fix.
func TestPartitionedOutboxViaRootToggled(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(partitionedDDL, e.db)
	cfg := e.config(partitionedConfig)
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	conn := e.connect()
	ctx := context.Background()
	write := func(txns int, salt int) {
		t.Helper()
		for i := 0; i < txns; i++ {
			if err := p.insertAt(ctx, conn, "public.poutbox", 25, keyed(50, salt+i), month(1+i%2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(20, 0)
	e.waitAllDelivered(p.committed(), 90*time.Second).mustHold(t, true)

	if code := r.stop(60 * time.Second); code != 0 {
		t.Fatalf("relay exited %d after SIGTERM", code)
	}
	e.exec(`ALTER PUBLICATION outbox_relay SET (publish_via_partition_root = false)`, e.db)
	write(40, 1000)
	e.exec(`ALTER PUBLICATION outbox_relay SET (publish_via_partition_root = true)`, e.db)
	write(20, 2000)
	r = e.startRelay(cfg)
	v := e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("option off while the relay was stopped: %s", v)
	v.mustHold(t, true)
	if !strings.Contains(r.out.String(), "rows of a partition arrive under its own name") {
		t.Errorf("no warning about rows under a partition's name")
	}

	e.exec(`ALTER PUBLICATION outbox_relay SET (publish_via_partition_root = false)`, e.db)
	write(40, 3000)
	code, out := r.wait(60 * time.Second)
	last := lastLine(out)
	t.Logf("option off while streaming: relay exited %d: %s", code, last)
	if code == 0 || !strings.Contains(last, `ALTER PUBLICATION "outbox_relay" SET (publish_via_partition_root = true)`) {
		t.Fatalf("want a fatal error with the fix, got exit %d: %s", code, last)
	}
	e.exec(`ALTER PUBLICATION outbox_relay SET (publish_via_partition_root = true)`, e.db)
	r = e.startRelay(cfg)
	write(10, 4000)
	v = e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("option off while streaming, then fixed: %s", v)
	v.mustHold(t, false)
	r.mustBeRunning()
}
