package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/relay-dev/relay/internal/devenv"
)

var types = []string{"Order", "Customer", "Invoice"}

func keyed(keys int, salt int) func(i int) (string, string) {
	return func(i int) (string, string) {
		k := (i*7919 + salt*31) % keys
		return types[k%len(types)], fmt.Sprintf("agg-%d", k)
	}
}

func allTopics(prefix string) []string {
	var ts []string
	for _, t := range types {
		ts = append(ts, prefix+t)
	}
	return ts
}

// TestEndToEnd relays events from two outbox tables (one with a quoted,
// mixed-case name and its own topic template), written by concurrent
// transactions, and checks every event's topic, key, murmur2 partition, id
// and type headers and per-key order with an independent consumer. It then
// stops the relay with SIGTERM and checks a restart re-sends nothing.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(`CREATE SCHEMA "Sales"`, e.db)
	e.exec(devenv.OutboxDDL(`"Sales"."Outbox"`), e.db)
	cfg := e.config(`outbox:
  - table: public.outbox
  - table: '"Sales"."Outbox"'
    topic: "sales.${routedByValue}.v1"
`)
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")

	p := newProducer()
	ctx := context.Background()
	writers, txns := 4, e2eTxns()
	g, gctx := errgroup.WithContext(ctx)
	for w := 0; w < writers; w++ {
		conn := e.connect()
		g.Go(func() error {
			for i := 0; i < txns; i++ {
				table := "public.outbox"
				if i%3 == 0 {
					table = `"Sales"."Outbox"`
				}
				if err := p.insert(gctx, conn, table, 1+i%9, keyed(100, w*txns+i)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// An UPDATE is not relayed; an insert deleted in its own transaction is.
	conn := e.connect()
	if _, err := conn.Exec(ctx, `UPDATE public.outbox SET type = 'Changed' WHERE id = (SELECT id FROM public.outbox LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	if err := p.insert(ctx, conn, "public.outbox", 1, func(int) (string, string) { return "Order", "deleted-key" }); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM public.outbox WHERE aggregateid = 'deleted-key'`); err != nil {
		t.Fatal(err)
	}
	tx, _ := conn.Begin(ctx)
	var id string
	if err := tx.QueryRow(ctx, `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) VALUES ('Order','tx-key','OrderCreated','{"key":"tx-key","seq":1}') RETURNING id::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM public.outbox WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	p.events = append(p.events, event{ID: id, Type: "Order", Key: "tx-key", Seq: 1, Table: "public.outbox"})

	committed := p.committed()
	topics := append(allTopics("outbox.event."), "sales.Order.v1", "sales.Customer.v1", "sales.Invoice.v1")
	e.waitDelivered(len(committed), 90*time.Second, topics...)
	recs := e.readAll(topics...)
	topicOf := func(ev event) string {
		if strings.Contains(ev.Table, "Sales") {
			return "sales." + ev.Type + ".v1"
		}
		return defaultTopic(ev)
	}
	v := check(committed, recs, e.parts, topicOf)
	t.Logf("first run: %s, records=%d", v, len(recs))
	if v.lost != 0 || v.orderViolations != 0 || v.misplaced != 0 || v.duplicates != 0 || len(v.problems) != 0 {
		t.Fatalf("%s\n%s", v, strings.Join(v.problems, "\n"))
	}
	for _, rec := range recs {
		if rec.Headers["type"] == "Changed" {
			t.Fatalf("an UPDATE was relayed: %+v", rec)
		}
	}

	// Clean stop: exit 0 and a restart re-sends nothing.
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	r2 := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	if err := p.insert(ctx, conn, "public.outbox", 5, keyed(100, 1)); err != nil {
		t.Fatal(err)
	}
	committed = p.committed()
	e.waitDelivered(len(committed), 60*time.Second, topics...)
	recs = e.readAll(topics...)
	v = check(committed, recs, e.parts, topicOf)
	if v.lost != 0 || v.duplicates != 0 || v.orderViolations != 0 {
		t.Fatalf("after clean restart: %s (want no duplicates)\n%s", v, strings.Join(v.problems, "\n"))
	}
	if code := r2.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// TestStartupErrors checks that each misconfiguration stops the relay with a
// non-zero exit and a message naming what is at fault.
func TestStartupErrors(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec("CREATE ROLE norepl LOGIN", e.db)
	e.exec("CREATE TABLE public.nopayload (id uuid, aggregatetype text, aggregateid text, type text)", e.db)
	e.exec("CREATE TABLE public.jsonid (id jsonb, aggregatetype text, aggregateid numeric, type text, payload integer)", e.db)
	e.exec("SELECT pg_create_logical_replication_slot('other_plugin', 'test_decoding')", e.db)
	cases := []struct {
		name, cfg string
		want      []string
	}{
		{"missing table", e.config("outbox:\n  - table: public.missing\n"), []string{"public.missing", "does not exist"}},
		{"missing column", e.config("outbox:\n  - table: public.nopayload\n"), []string{"public.nopayload", `"payload"`}},
		{"unusable column types", e.config("outbox:\n  - table: public.jsonid\n"),
			[]string{"public.jsonid", `"id" (outbox.columns.id) is jsonb`, `"aggregateid" (outbox.columns.key) is numeric`, `"payload" (outbox.columns.payload) is integer`}},
		{"no replication privilege", strings.Replace(e.config(""), "postgres@", "norepl@", 1), []string{"norepl", "REPLICATION"}},
		{"slot with another plugin", strings.Replace(e.config(""), "postgres:\n", "postgres:\n  slot: other_plugin\n", 1), []string{"other_plugin", "test_decoding"}},
		{"invalid config", e.config("outbox:\n  - table: public.outbox\n    on_update: explode\n"), []string{"outbox[0].on_update"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.startRelay(c.cfg)
			code, out := r.wait(60 * time.Second)
			if code == 0 {
				t.Fatalf("exit code 0, want failure; output:\n%s", out)
			}
			last := lastLine(out)
			for _, w := range c.want {
				if !strings.Contains(last, w) {
					t.Errorf("final line does not mention %q: %s", w, last)
				}
			}
		})
	}
}

// TestWalLevelReplica runs against a cluster without logical decoding.
func TestWalLevelReplica(t *testing.T) {
	e := newEnv(t, envOpts{pgSettings: map[string]string{"wal_level": "replica"}})
	r := e.startRelay(e.config(""))
	code, out := r.wait(60 * time.Second)
	if code == 0 || !strings.Contains(lastLine(out), "wal_level") {
		t.Fatalf("exit %d, want a wal_level error; output:\n%s", code, tail(out, 10))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// e2eTxns is the transactions per writer in TestEndToEnd; RELAY_E2E_TXNS
// scales it up for a longer black-box run.
func e2eTxns() int {
	if n, err := strconv.Atoi(os.Getenv("RELAY_E2E_TXNS")); err == nil && n > 0 {
		return n
	}
	return 150
}
