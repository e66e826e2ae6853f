package test

// Continuity tests: the database changes under the relay (its slot dropped,
// moved or not persisted) and the relay must notice from its own progress
// record rather than carry on from whatever Postgres holds now.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relay-dev/relay/internal/devenv/devenvtest"
)

// progressTopic is kafka.progress_topic's default.
const progressTopic = "relay.progress"

func (e *env) slotExists(slot string) bool {
	var n int64
	if err := e.scan("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", []any{slot}, &n); err != nil {
		e.t.Fatal(err)
	}
	return n > 0
}

// mustStopForLostSlot checks a relay exited non-zero with the slot-lost
// error and without creating a slot after its first start.
func mustStopForLostSlot(t *testing.T, r *relay, want ...string) string {
	t.Helper()
	code, out := r.wait(60 * time.Second)
	if code == 0 {
		t.Fatalf("relay exited 0 after losing its slot")
	}
	last := lastLine(out)
	for _, w := range append([]string{"replication slot lost", "on_slot_lost"}, want...) {
		if !strings.Contains(last, w) {
			t.Fatalf("last line lacks %q:\n%s", w, last)
		}
	}
	return out
}

// TestSlotDroppedWhileRunning drops the slot under a running relay and a
// steady writer: events committed in the gap are not decodable from any new
// slot, so the relay must stop and say so, never create a fresh slot.
func TestSlotDroppedWhileRunning(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.startRelay(e.config(outboxOnly))
	e.waitStreaming("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 10*time.Millisecond)
	e.waitGrowth(100, 60*time.Second)
	e.dropSlot(t, "outbox_relay")
	out := mustStopForLostSlot(t, r)
	w.halt()
	if n := strings.Count(out, "created replication slot"); n != 1 {
		t.Fatalf("relay created a slot %d times (want only the first start)", n)
	}
	if e.slotExists("outbox_relay") {
		t.Fatal("the relay recreated its slot")
	}
	t.Logf("relay stopped with: %s", lastLine(out))
}

// TestSlotDroppedWhileStopped drops the slot of a stopped relay. A fresh
// process has no memory but its progress record: it must refuse to start
// (and create no slot) by default, and with on_slot_lost: recreate carry on
// and name the range that may be missing.
func TestSlotDroppedWhileStopped(t *testing.T) {
	e := newEnv(t, envOpts{})
	// Without a snapshot of the recreated slot, so that the gap stays a gap:
	// snapshot.mode initial would publish the rows still in the outbox again.
	cfg := e.config(outboxOnly + "snapshot: {mode: never}\n")
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	conn := e.connect()
	defer conn.Close(context.Background())
	if err := p.insert(context.Background(), conn, "public.outbox", 20, keyed(5, 0)); err != nil {
		t.Fatal(err)
	}
	e.waitAllDelivered(p.committed(), 60*time.Second).mustHold(t, true)
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	e.dropSlot(t, "outbox_relay")
	// Committed while no slot exists: no slot can ever decode these.
	gap := newProducer()
	if err := gap.insert(context.Background(), conn, "public.outbox", 5, func(i int) (string, string) { return "Gap", fmt.Sprint("gap-", i) }); err != nil {
		t.Fatal(err)
	}

	out := mustStopForLostSlot(t, e.startRelay(cfg), "is missing")
	if strings.Contains(out, "created replication slot") || e.slotExists("outbox_relay") {
		t.Fatalf("relay created a slot:\n%s", tail(out, 10))
	}

	r = e.startRelay(cfg, "RELAY_POSTGRES_ON_SLOT_LOST=recreate")
	e.waitStreaming("outbox_relay")
	waitFor(t, 30*time.Second, "a warning naming the possibly missing range", func() bool {
		return routingLogged(r, "warn", "on_slot_lost is recreate", "is missing")
	})
	if err := p.insert(context.Background(), conn, "public.outbox", 10, keyed(5, 2)); err != nil {
		t.Fatal(err)
	}
	// Everything but the events of the gap arrives; the gap is what the
	// warning is about.
	e.waitAllDelivered(p.committed(), 60*time.Second).mustHold(t, true)
	r.mustBeRunning()
}

// TestSlotAheadOfProgress advances the slot by hand while the relay is
// stopped: the events it skipped were never published, so the relay must
// refuse the slot's position, naming both positions.
func TestSlotAheadOfProgress(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := e.config(outboxOnly)
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p := newProducer()
	conn := e.connect()
	defer conn.Close(context.Background())
	if err := p.insert(context.Background(), conn, "public.outbox", 5, keyed(5, 0)); err != nil {
		t.Fatal(err)
	}
	e.exec("SELECT pg_replication_slot_advance('outbox_relay', pg_current_wal_lsn())", e.db)
	mustStopForLostSlot(t, e.startRelay(cfg), "ahead of the relay's progress record")
}

// TestFreshRelayAfterPostgresRestart restarts Postgres while no relay runs.
// PostgreSQL 15 and 16 do not persist a logical slot's confirmed position at
// shutdown, so the slot falls back; a new relay process must resume from its
// progress record and re-send nothing it had delivered.
func TestFreshRelayAfterPostgresRestart(t *testing.T) {
	for _, v := range []int{15, 16} {
		t.Run(fmt.Sprintf("pg%d", v), func(t *testing.T) {
			devenvtest.RequirePostgres(t, v)
			e := newEnv(t, envOpts{pgVersion: v})
			cfg := e.config(outboxOnly)
			r := e.startRelay(cfg)
			e.waitStreaming("outbox_relay")
			p := newProducer()
			conn := e.connect()
			for i := 0; i < 50; i++ {
				if err := p.insert(context.Background(), conn, "public.outbox", 20, keyed(20, i)); err != nil {
					t.Fatal(err)
				}
			}
			conn.Close(context.Background())
			e.waitAllDelivered(p.committed(), 60*time.Second).mustHold(t, true)
			e.waitConfirmedCatchUp("outbox_relay", 30*time.Second)
			if code := r.stop(30 * time.Second); code != 0 {
				t.Fatalf("exit %d", code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := e.pg.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			confirmed, current := e.slotLSNs("outbox_relay")
			t.Logf("PostgreSQL %d after restart: slot confirmed at %X, WAL at %X", v, confirmed, current)

			r = e.startRelay(cfg)
			e.waitStreaming("outbox_relay")
			conn = e.connect()
			defer conn.Close(context.Background())
			if err := p.insert(context.Background(), conn, "public.outbox", 10, keyed(20, 99)); err != nil {
				t.Fatal(err)
			}
			v := e.waitAllDelivered(p.committed(), 60*time.Second)
			t.Logf("fresh relay after a Postgres restart: %s", v)
			v.mustHold(t, true)
			r.mustBeRunning()
		})
	}
}

// TestMappingChangeWarned hands the slot from a relay to one with another
// mapping, as a botched deploy would: the second must say so.
func TestMappingChangeWarned(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.startRelay(e.config(outboxOnly))
	e.waitStreaming("outbox_relay")
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	r = e.startRelay(e.config("outbox:\n  - table: public.outbox\n    topic: other.${routedByValue}\n"))
	e.waitStreaming("outbox_relay")
	waitFor(t, 30*time.Second, "a warning that the mapping changed", func() bool {
		return routingLogged(r, "warn", "mapping changed since the progress record was written")
	})
	r.mustBeRunning()
}
