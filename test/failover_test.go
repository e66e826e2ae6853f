package test

// Failover tests: the relay on a multi-host postgres.url while the primary
// dies and a physical standby is promoted.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
)

// standbySlot is the primary's physical slot for its standby.
const standbySlot = "standby1"

// failoverEnv is an env whose server is a primary with a streaming standby
// made from a cold copy of it. With syncSlots (PostgreSQL 17+) the standby
// synchronizes failover slots and the primary holds logical walsenders back
// until the standby has the WAL (synchronized_standby_slots).
type failoverEnv struct {
	*env
	primary, standby *devenv.Postgres
}

func newFailoverEnv(t *testing.T, version int, syncSlots bool) *failoverEnv {
	t.Helper()
	devenvtest.RequirePostgres(t, version)
	e := &env{t: t, db: "app", parts: 3}
	settings := map[string]string{}
	if syncSlots {
		settings["synchronized_standby_slots"] = standbySlot
	}
	primary := devenvtest.Postgres(t, devenv.PostgresOptions{Version: version, Settings: settings})
	t.Logf("PostgreSQL %d primary on port %d", primary.Version(), primary.Port())
	e.pg = primary
	e.kafka = devenvtest.Kafka(t, devenv.KafkaOptions{Partitions: int(e.parts)})
	e.exec("CREATE DATABASE app", "postgres")
	e.exec(devenv.OutboxDDL("public.outbox"), e.db)
	// Reserving WAL now keeps everything the standby needs from the copy on.
	e.exec(fmt.Sprintf("SELECT pg_create_physical_replication_slot('%s', true)", standbySlot), "postgres")
	if err := primary.Stop(); err != nil {
		t.Fatal(err)
	}
	standbySettings := map[string]string{
		// dbname lets the slot sync worker connect to a database.
		"primary_conninfo":     fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=app application_name=%s", primary.Port(), standbySlot),
		"primary_slot_name":    standbySlot,
		"hot_standby_feedback": "on",
		// Reconnect to the primary quickly: it is down while the copy starts.
		"wal_retrieve_retry_interval": "100ms",
	}
	if syncSlots {
		standbySettings["sync_replication_slots"] = "on"
		// The copy inherits the primary's setting; once promoted, this
		// server has no standby to wait for.
		standbySettings["synchronized_standby_slots"] = ""
	}
	standby := devenvtest.Postgres(t, devenv.PostgresOptions{Version: version, DataFrom: primary.DataDir(), Standby: true, Settings: standbySettings})
	t.Logf("standby on port %d", standby.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the standby to stream from the primary", func() bool {
		var n int
		err := e.scan("SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", []any{standbySlot}, &n)
		return err == nil && n == 1
	})
	// libpq semantics, as pgx implements them: the first host that accepts
	// a read-write session. The standby comes first, so both of the relay's
	// connections must skip it while it is one.
	e.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/app?sslmode=disable&target_session_attrs=read-write", standby.Port(), primary.Port())
	return &failoverEnv{env: e, primary: primary, standby: standby}
}

// queryOn runs a one-row query on one server's app database.
func queryOn(pg *devenv.Postgres, sql string, dest ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL("postgres", "app"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// outboxRows reads the outbox as the server has it, as events numbered
// per key in commit order: rows the old primary acknowledged but never
// shipped to the standby are gone after a failover (replication is
// asynchronous), so the writer's own numbering has gaps.
func outboxRows(t *testing.T, pg *devenv.Postgres) []event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL("postgres", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id::text, aggregatetype, aggregateid, (payload->>'seq')::int FROM public.outbox")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event, error) {
		ev := event{Table: "public.outbox"}
		err := r.Scan(&ev.ID, &ev.Type, &ev.Key, &ev.Seq)
		return ev, err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].Key != evs[j].Key {
			return evs[i].Key < evs[j].Key
		}
		return evs[i].Seq < evs[j].Seq
	})
	rank := map[string]int{}
	for i := range evs {
		rank[evs[i].Key]++
		evs[i].Seq = rank[evs[i].Key]
	}
	return evs
}

// TestFailover fails a PostgreSQL 17 primary over to its standby under
// steady writes, with the relay on a failover slot and a multi-host URL. The
// relay must follow the new primary and carry on from the synchronized
// slot: every row the new primary has reaches Kafka in per-key order, and
// Kafka holds no event the new primary does not have (synchronized_standby_slots
// keeps the relay behind the standby). Recreating the slot instead would
// lose the rows written in between; streaming ahead of the standby would
// leave phantoms.
func TestFailover(t *testing.T) {
	f := newFailoverEnv(t, 17, true)
	r := f.startRelay(f.config(outboxOnly), "RELAY_POSTGRES_SLOT_FAILOVER=true")
	f.waitStreaming("outbox_relay")

	p := newProducer()
	w := f.startSteadyWriter(p, 10*time.Millisecond)
	f.waitGrowth(200, 60*time.Second)
	f.waitSyncedCopy()
	check, _ := runRelay(t, f.config(""), "check")
	if want := "✓ failover: slot outbox_relay is a failover slot; synchronized_standby_slots = standby1"; !strings.Contains(check, want) {
		t.Errorf("relay check lacks %q:\n%s", want, check)
	}
	status, _ := runRelay(t, f.config(""), "status")
	t.Logf("relay status before the failover:\n%s", status)
	if !strings.Contains(status, "failover:      true") {
		t.Errorf("relay status does not show the failover slot:\n%s", status)
	}
	f.waitGrowth(100, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := len(p.committed())
	down := time.Now()
	stops := strings.Count(r.out.String(), "pipeline stopped")
	if err := f.primary.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	// A failover tool takes a while to promote: the relay must keep
	// retrying (the stream broke, then the only server left is read-only),
	// never give up or settle on the standby.
	waitFor(t, 60*time.Second, "the relay to retry while no primary is up", func() bool {
		return strings.Count(r.out.String(), "pipeline stopped") >= stops+3
	})
	t.Logf("relay, no primary: %s", nthLine(r.out.String(), "pipeline stopped", stops+2))
	r.mustBeRunning()
	if err := f.standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	f.pg = f.standby
	f.waitStreaming("outbox_relay")
	t.Logf("primary down; standby promoted %s later; relay streaming from it %s after the promotion",
		promoted.Sub(down).Round(time.Millisecond), time.Since(promoted).Round(time.Millisecond))
	w.waitCommitted(before+300, 90*time.Second)
	f.waitGrowth(200, 60*time.Second)
	w.halt()
	r.mustBeRunning()
	status, _ = runRelay(t, f.config(""), "status")
	t.Logf("relay status after the failover:\n%s", status)
	f.verifyFailover(p, w, r)
	if n := strings.Count(r.out.String(), "created replication slot"); n != 1 {
		t.Errorf("the relay created the slot %d times, want once (on the old primary)", n)
	}
}

// TestFailoverRelayRestarted loses the relay together with the primary
// (kill -9 first) and starts a fresh one after the promotion. It knows
// nothing of the old primary but its progress record, which must be where
// it resumes from: the synchronized copy of the slot may be behind.
func TestFailoverRelayRestarted(t *testing.T) {
	f := newFailoverEnv(t, 17, true)
	cfg := f.config(outboxOnly)
	r := f.startRelay(cfg, "RELAY_POSTGRES_SLOT_FAILOVER=true")
	f.waitStreaming("outbox_relay")
	p := newProducer()
	w := f.startSteadyWriter(p, 10*time.Millisecond)
	f.waitGrowth(200, 60*time.Second)
	f.waitSyncedCopy()
	f.waitGrowth(100, 60*time.Second)

	r.kill()
	if err := f.primary.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	var copyLSN string
	if err := queryOn(f.standby, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'outbox_relay'", &copyLSN); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := f.standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	f.pg = f.standby
	before := len(p.committed())
	r2 := f.startRelay(cfg, "RELAY_POSTGRES_SLOT_FAILOVER=true")
	f.waitStreaming("outbox_relay")
	t.Logf("the synchronized copy of the slot was at %s at the promotion", copyLSN)
	w.waitCommitted(before+300, 90*time.Second)
	f.waitGrowth(200, 60*time.Second)
	w.halt()
	r2.mustBeRunning()
	f.verifyFailover(p, w, r, r2)
	if strings.Contains(r2.out.String(), "created replication slot") {
		t.Errorf("the new relay created a slot")
	}
}

// waitSyncedCopy waits until the standby's copy of the slot is persistent
// (synced and no longer temporary) and past where the primary's slot is
// now, or a promotion would find nothing to continue from.
func (f *failoverEnv) waitSyncedCopy() {
	f.t.Helper()
	var lsn string
	if err := queryOn(f.primary, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'outbox_relay'", &lsn); err != nil {
		f.t.Fatal(err)
	}
	waitFor(f.t, 90*time.Second, "the standby to hold a synchronized copy of the slot", func() bool {
		var ok bool
		err := queryOn(f.standby, fmt.Sprintf(`SELECT synced AND failover AND NOT temporary AND confirmed_flush_lsn >= '%s'
			FROM pg_replication_slots WHERE slot_name = 'outbox_relay'`, lsn), &ok)
		return err == nil && ok
	})
}

// verifyFailover checks Kafka against what the new primary has: every row
// there delivered in per-key order, nothing else (a phantom has an id the
// new primary does not know). It logs duplicates and what the writer lost
// with the old primary.
func (f *failoverEnv) verifyFailover(p *producer, w *steadyWriter, relays ...*relay) {
	t := f.t
	t.Helper()
	truth := outboxRows(t, f.standby)
	acked := p.committed()
	v, err := f.collectDelivered(truth, 90*time.Second)
	phantoms := 0
	for _, pr := range v.problems {
		if strings.Contains(pr, "unknown id") {
			phantoms++
		}
	}
	t.Logf("failover: %s phantoms=%d; the writer saw %d commits acknowledged, the new primary has %d rows (%d lost with the old primary, asynchronous replication); writer retries=%d ambiguous_commits=%d",
		v, phantoms, len(acked), len(truth), len(acked)-len(truth), w.retries.Load(), w.ambiguous.Load())
	for _, r := range relays {
		for _, l := range strings.Split(r.out.String(), "\n") {
			if strings.Contains(l, "pipeline stopped") || strings.Contains(l, "streaming from") || strings.Contains(l, "resum") || strings.Contains(l, "timeline") {
				t.Logf("relay: %s", l)
			}
		}
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(v.problems, "\n"))
	}
	v.mustHold(t, false)
	f.waitConfirmedCatchUp("outbox_relay", 30*time.Second)
}

// TestSlotFailover checks postgres.slot_failover on whatever version the
// suite runs: PostgreSQL 17+ creates a failover slot (or turns an existing
// slot into one) and warns that synchronized_standby_slots is empty; older
// servers refuse it naming the key. relay check says the same.
func TestSlotFailover(t *testing.T) {
	e := newEnv(t, envOpts{})
	v := e.pg.Version()
	cfg := e.config(outboxOnly)

	out, _ := runRelay(t, cfg, "check")
	t.Logf("relay check, postgres.slot_failover: false:\n%s", out)
	wantLine := "✓ failover: slot outbox_relay is not a failover slot (postgres.slot_failover: false); no physical standby seen"
	if v < 17 {
		wantLine = fmt.Sprintf("✓ failover: PostgreSQL %d has no failover slots", v)
	}
	if !strings.Contains(out, wantLine) {
		t.Errorf("relay check lacks %q", wantLine)
	}
	if idle := "idle_replication_slot_timeout = 0 (off)"; (v >= 18) != strings.Contains(out, idle) {
		t.Errorf("relay check on PostgreSQL %d: mentions %q: %t", v, idle, v < 18)
	}

	// Created without failover first, so that turning the key on has an
	// existing slot to convert.
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	if code := r.stop(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	t.Setenv("RELAY_POSTGRES_SLOT_FAILOVER", "true")
	out, code := runRelay(t, cfg, "check")
	t.Logf("relay check, postgres.slot_failover: true:\n%s", out)
	if v < 17 {
		if code == 0 || !strings.Contains(strings.Join(failedLines(out), "\n"), "✗ failover: postgres.slot_failover is true, but this server is PostgreSQL") {
			t.Errorf("relay check exited %d without a ✗ failover line naming postgres.slot_failover", code)
		}
		r = e.startRelay(cfg)
		code, out := r.wait(30 * time.Second)
		if last := lastLine(out); code == 0 || !strings.Contains(last, "postgres.slot_failover") || !strings.Contains(last, "PostgreSQL 17") {
			t.Errorf("relay exited %d, want a failure naming postgres.slot_failover and PostgreSQL 17; last line: %s", code, last)
		}
		return
	}
	if !strings.Contains(out, "! failover: slot \"outbox_relay\" is a failover slot, but synchronized_standby_slots is empty") {
		t.Errorf("relay check does not warn about synchronized_standby_slots")
	}
	r = e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	var failover bool
	if err := e.scan("SELECT failover FROM pg_replication_slots WHERE slot_name = 'outbox_relay'", nil, &failover); err != nil || !failover {
		t.Fatalf("slot failover = %t (%v), want true", failover, err)
	}
	waitFor(t, 10*time.Second, "the warning about synchronized_standby_slots", func() bool {
		return strings.Contains(r.out.String(), "synchronized_standby_slots is empty")
	})
	if !strings.Contains(r.out.String(), "made the replication slot a failover slot") {
		t.Errorf("no log line about converting the slot:\n%s", r.out.String())
	}
	if n := strings.Count(r.out.String(), "created replication slot"); n != 0 {
		t.Errorf("the slot was recreated instead of converted")
	}
	status, _ := runRelay(t, cfg, "status")
	if !strings.Contains(status, "failover:      true (synced false") {
		t.Errorf("relay status:\n%s", status)
	}
}

// TestFailoverWithoutFailoverSlot fails over a primary whose slot the
// standby does not have (PostgreSQL 16: no failover slots). Events committed
// since the relay's confirmed position are unreachable on the new primary,
// so the relay must stop with a clear error, not create a fresh slot and
// skip them: with the default settings because it streamed from the slot
// (and has a progress record of it), with postgres.create_slot: false
// because it may not create one.
func TestFailoverWithoutFailoverSlot(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		f := newFailoverEnv(t, 16, false)
		r := f.startRelay(f.config(outboxOnly))
		out := failOverUnderLoad(t, f, r)
		last := lastLine(out)
		named := strings.Contains(last, `replication slot "outbox_relay"`)
		missing := strings.Contains(last, "missing") || strings.Contains(last, "vanished")
		if !named || !missing {
			t.Errorf("want a failure naming slot outbox_relay as missing; last line: %s", last)
		}
		if n := strings.Count(out, "created replication slot"); n != 1 {
			t.Errorf("the relay created the slot %d times, want once (on the old primary)", n)
		}
	})
	t.Run("create_slot=false", func(t *testing.T) {
		f := newFailoverEnv(t, 16, false)
		f.exec("CREATE PUBLICATION outbox_relay FOR TABLE public.outbox WITH (publish = 'insert', publish_via_partition_root = true)", f.db)
		f.exec("SELECT pg_create_logical_replication_slot('outbox_relay', 'pgoutput')", f.db)
		r := f.startRelay(f.config(outboxOnly), "RELAY_POSTGRES_CREATE_SLOT=false")
		out := failOverUnderLoad(t, f, r)
		if last := lastLine(out); !strings.Contains(last, `replication slot "outbox_relay" does not exist`) {
			t.Errorf("want a failure naming slot outbox_relay as missing; last line: %s", last)
		}
		if strings.Contains(out, "created replication slot") {
			t.Errorf("the relay created a slot")
		}
	})
}

// failOverUnderLoad stops the primary under steady writes, promotes the
// standby, waits for the relay to exit non-zero and checks no slot of its
// name appeared on the new primary. It returns the relay's output.
func failOverUnderLoad(t *testing.T, f *failoverEnv, r *relay) string {
	t.Helper()
	f.waitStreaming("outbox_relay")
	p := newProducer()
	w := f.startSteadyWriter(p, 10*time.Millisecond)
	f.waitGrowth(200, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := f.primary.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := f.standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	f.pg = f.standby
	code, out := r.wait(90 * time.Second)
	w.halt()
	t.Logf("relay exited %d: %s", code, lastLine(out))
	if code == 0 {
		t.Errorf("relay exited 0")
	}
	var n int
	if err := queryOn(f.standby, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_relay'", &n); err != nil || n != 0 {
		t.Errorf("new primary has %d slots named outbox_relay (%v), want none", n, err)
	}
	return out
}
