package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/internal/devenv/devenvtest"
)

// xidWriter commits outbox transactions back to back on one connection and
// remembers each one's transaction id, so the test can find its commit
// record in the WAL afterwards.
type xidWriter struct {
	e    *env
	mu   sync.Mutex
	txns []xidTxn
	stop chan struct{}
	done chan struct{}
	err  error
}

type xidTxn struct {
	xid string
	ids []string
}

func (e *env) startXIDWriter() *xidWriter {
	w := &xidWriter{e: e, stop: make(chan struct{}), done: make(chan struct{})}
	conn := e.connect()
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			tx, err := w.write(conn, 1+i%4, i)
			if err != nil {
				w.err = err
				return
			}
			w.mu.Lock()
			w.txns = append(w.txns, tx)
			w.mu.Unlock()
			time.Sleep(2 * time.Millisecond) // pacing the load, not waiting for a condition
		}
	}()
	e.t.Cleanup(w.halt)
	return w
}

func (w *xidWriter) write(conn *pgx.Conn, n, salt int) (xidTxn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var x xidTxn
	tx, err := conn.Begin(ctx)
	if err != nil {
		return x, err
	}
	defer tx.Rollback(ctx)
	for i := 0; i < n; i++ {
		typ, key := keyed(40, salt)(i)
		payload, _ := json.Marshal(map[string]any{"key": key})
		var id string
		if err := tx.QueryRow(ctx, `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text`,
			typ, key, typ+"Created", payload).Scan(&id); err != nil {
			return x, err
		}
		x.ids = append(x.ids, id)
	}
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&x.xid); err != nil {
		return x, err
	}
	return x, tx.Commit(ctx)
}

func (w *xidWriter) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *xidWriter) committed() []xidTxn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]xidTxn(nil), w.txns...)
}

// TestPublicationDropped drops the relay's publication under load on
// PostgreSQL 15, whose walsender then fails on the first change after the
// drop.
func TestPublicationDropped(t *testing.T) { publicationDropped(t, 0) }

// TestPublicationDroppedPG18 is the same on PostgreSQL 18, whose walsender
// only warns "skipped loading publication" and goes on skipping every change:
// the relay must treat the warning as the end of the stream.
func TestPublicationDroppedPG18(t *testing.T) {
	devenvtest.RequirePostgres(t, 18)
	publicationDropped(t, 18)
}

// publicationDropped drops the publication while a writer commits outbox
// transactions back to back. The relay must exit non-zero, saying what
// happened and the ways on, and must never confirm the slot past the gap:
// confirmed_flush_lsn must stay at or before the commit record of every
// transaction it did not relay (Postgres skips, on restart, transactions
// whose commit starts before the confirmed position, so confirming past one
// loses it for good). The commit records are found with pg_walinspect by
// transaction id. Restarted, the relay must not recreate the publication and
// carry on (it used to, and looped on the same error for ever); recreated by
// hand, the publication does not cover the gap and the relay stops again;
// dropping the slot, the explicit acceptance of the gap, lets it go on.
func publicationDropped(t *testing.T, version int) {
	e := newEnv(t, envOpts{pgVersion: version})
	e.exec("CREATE EXTENSION pg_walinspect", e.db)
	var server string
	if err := e.scan("SELECT current_setting('server_version')", nil, &server); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(outboxOnly)
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")

	w := e.startXIDWriter()
	e.waitGrowth(500, 60*time.Second)
	var before string
	if err := e.scan("SELECT pg_current_wal_lsn()::text", nil, &before); err != nil {
		t.Fatal(err)
	}
	e.exec("DROP PUBLICATION outbox_relay", e.db)
	code, out := r.wait(60 * time.Second)
	// A little more load after the relay is gone changes nothing: it is
	// not there to confirm anything.
	w.halt()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	last := lastLine(out)
	t.Logf("PostgreSQL %s, relay exited %d: %s", server, code, last)
	if code == 0 {
		t.Fatalf("relay exited 0 after its publication was dropped")
	}
	for _, want := range []string{`"outbox_relay"`, "without confirming the slot past that point",
		`CREATE PUBLICATION "outbox_relay" FOR TABLE "public"."outbox"`, "relay replay --table public.outbox --where",
		`pg_drop_replication_slot('outbox_relay')`} {
		if !strings.Contains(last, want) {
			t.Errorf("error does not say %q: %s", want, last)
		}
	}
	if strings.Count(out, "created replication slot") != 1 || strings.Count(out, "created publication") != 1 {
		t.Errorf("relay recreated its slot or publication:\n%s", tail(out, 20))
	}

	delivered := map[string]bool{}
	for _, rec := range e.readAll(outboxTopics...) {
		delivered[rec.Headers["id"]] = true
	}
	var confirmed, dropLSN int64
	if err := e.scan(`SELECT (confirmed_flush_lsn - '0/0')::bigint, ($1::pg_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = 'outbox_relay'`,
		[]any{before}, &confirmed, &dropLSN); err != nil {
		t.Fatal(err)
	}
	// The commit records of the transactions not relayed, oldest first.
	var notRelayed []string
	txns := w.committed()
	for _, x := range txns {
		for _, id := range x.ids {
			if !delivered[id] {
				notRelayed = append(notRelayed, x.xid)
				break
			}
		}
	}
	if len(notRelayed) == 0 {
		t.Fatalf("every one of %d transactions reached Kafka: the drop happened after the load", len(txns))
	}
	firstLost := int64(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := e.connect()
	rows, err := conn.Query(ctx, `SELECT (start_lsn - '0/0')::bigint, xid::text FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_lsn())
		WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid::text = ANY($2)`, before, notRelayed)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for rows.Next() {
		var lsn int64
		var xid string
		if err := rows.Scan(&lsn, &xid); err != nil {
			t.Fatal(err)
		}
		found++
		if firstLost < 0 || lsn < firstLost {
			firstLost = lsn
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// Transactions committed before the read of `before` and still in
	// flight when the relay stopped are also missing from Kafka; they are
	// before the gap and not confirmed either, so they are not looked up.
	t.Logf("%d of %d transactions not relayed (%d committed after the drop); confirmed_flush_lsn %s, WAL position just before the DROP %s, first commit not relayed at %s",
		len(notRelayed), len(txns), found, lsnText(confirmed), lsnText(dropLSN), lsnText(firstLost))
	if found == 0 {
		t.Fatalf("no commit record found after %s for the transactions not relayed", before)
	}
	if confirmed > firstLost {
		t.Fatalf("slot confirmed to %s, past the commit at %s of a transaction that never reached Kafka", lsnText(confirmed), lsnText(firstLost))
	}

	// A restart, as an orchestrator would do: the slot exists, the
	// publication does not, so the relay must stop again at start-up
	// rather than create it.
	r = e.startRelay(cfg)
	code, out = r.wait(60 * time.Second)
	last = lastLine(out)
	t.Logf("restarted: exit %d: %s", code, last)
	if code == 0 || !strings.Contains(last, `publication "outbox_relay" does not exist, but replication slot "outbox_relay" does`) {
		t.Errorf("restart did not refuse a missing publication with an existing slot: %s", last)
	}
	if strings.Contains(out, "created publication") {
		t.Errorf("restart recreated the publication:\n%s", tail(out, 20))
	}
	out, code = runRelay(t, cfg, "check")
	if code == 0 || !strings.Contains(strings.Join(failedLines(out), "\n"), "✗ publication outbox_relay: does not exist, but slot outbox_relay does") {
		t.Errorf("relay check exited %d without a ✗ for the missing publication:\n%s", code, out)
	}

	// Way on 1: recreate the publication. The gap is still not decodable,
	// so the relay stops on it again, confirming nothing past it.
	e.exec(`CREATE PUBLICATION "outbox_relay" FOR TABLE "public"."outbox" WITH (publish = 'insert', publish_via_partition_root = true)`, e.db)
	r = e.startRelay(cfg)
	code, out = r.wait(90 * time.Second)
	last = lastLine(out)
	t.Logf("publication recreated: exit %d: %s", code, last)
	if code == 0 || !strings.Contains(last, "without confirming the slot past that point") {
		t.Errorf("with the publication recreated the relay did not stop at the gap: %s", last)
	}
	if c2, _ := e.slotLSNs("outbox_relay"); c2 > firstLost {
		t.Errorf("slot confirmed to %s after the restart, past %s", lsnText(c2), lsnText(firstLost))
	}

	// Way on 2: accept the gap by dropping the slot and saying so with
	// on_slot_lost: the relay starts a new slot and relays what is committed
	// from then on.
	e.exec("SELECT pg_drop_replication_slot('outbox_relay')", e.db)
	r = e.startRelay(cfg, "RELAY_POSTGRES_ON_SLOT_LOST=recreate")
	e.waitStreaming("outbox_relay")
	p := newProducer()
	if err := p.insert(context.Background(), e.connect(), "public.outbox", 20, keyed(10, 1)); err != nil {
		t.Fatal(err)
	}
	recs := waitRecords(t, e, p.committed())
	t.Logf("after dropping the slot: %d of %d new events relayed", recs, len(p.committed()))
	r.mustBeRunning()
}

// waitRecords waits until every event of committed is in Kafka, ignoring
// whatever else the topics hold.
func waitRecords(t *testing.T, e *env, committed []event) int {
	t.Helper()
	want := map[string]bool{}
	for _, ev := range committed {
		want[ev.ID] = true
	}
	var n int
	waitFor(t, 60*time.Second, fmt.Sprintf("%d new events in Kafka", len(want)), func() bool {
		n = 0
		for _, rec := range e.readAll(outboxTopics...) {
			if want[rec.Headers["id"]] {
				n++
			}
		}
		return n >= len(want)
	})
	return n
}

func lsnText(b int64) string { return fmt.Sprintf("%X/%X", uint64(b)>>32, uint32(b)) }

// TestPublicationTableRemoved takes the outbox table out of the publication
// while the relay streams. The walsender says nothing (the table's rows just
// stop coming), so the relay's periodic check of its publication must notice
// and stop it, naming the table and the ALTER PUBLICATION that puts it back.
func TestPublicationTableRemoved(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.startRelay(e.config(outboxOnly))
	e.waitStreaming("outbox_relay")
	w := e.startXIDWriter()
	e.waitGrowth(100, 60*time.Second)
	e.exec("ALTER PUBLICATION outbox_relay DROP TABLE public.outbox", e.db)
	start := time.Now()
	code, out := r.wait(60 * time.Second)
	w.halt()
	last := lastLine(out)
	t.Logf("relay exited %d %s after the table was removed: %s", code, time.Since(start).Round(time.Second), last)
	if code == 0 || !strings.Contains(last, `outbox table public.outbox was removed from publication "outbox_relay"`) ||
		!strings.Contains(last, `ALTER PUBLICATION "outbox_relay" ADD TABLE "public"."outbox"`) {
		t.Fatalf("want a fatal error naming the table and the fix, got exit %d: %s", code, last)
	}
}

// TestPublicationRowFilter gives the relay a publication with a row filter
// on the outbox: the rows it leaves out never reach the relay. That may be
// intended, so it is a warning, in relay check and at start-up, not a stop.
func TestPublicationRowFilter(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(`CREATE PUBLICATION outbox_relay FOR TABLE public.outbox WHERE (aggregatetype <> 'Internal') WITH (publish = 'insert')`, e.db)
	cfg := e.config(outboxOnly)
	out, code := runRelay(t, cfg, "check")
	if code != 0 || !strings.Contains(out, `! publication outbox_relay: has a row filter (WHERE) on "public"."outbox"`) {
		t.Errorf("relay check exited %d without a warning for the row filter:\n%s", code, out)
	}
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	waitFor(t, 30*time.Second, "the start-up warning about the row filter", func() bool {
		return strings.Contains(r.out.String(), `"level":"warn"`) && strings.Contains(r.out.String(), "has a row filter (WHERE) on these outbox tables")
	})
	if code := r.stop(60 * time.Second); code != 0 {
		t.Errorf("relay exited %d after SIGTERM", code)
	}
}
