package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/internal/devenv"
)

const routingDDL = `
CREATE TABLE public.orders_outbox (
	event_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	agg_type   text NOT NULL,
	agg_id     text,
	event_type text NOT NULL,
	body       json,
	created_at timestamptz NOT NULL DEFAULT now(),
	tenant     text,
	shard      int);
CREATE SCHEMA "Billing";
CREATE TABLE "Billing"."Outbox" (  -- Debezium's documented layout
	id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregatetype varchar(255) NOT NULL,
	aggregateid   varchar(255) NOT NULL,
	type          varchar(255) NOT NULL,
	payload       jsonb);
CREATE TABLE public.tomb_outbox  (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text, aggregateid text, type text, payload text);
CREATE TABLE public.loose_outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text, aggregateid text, type text, payload varchar(200), tenant text);
CREATE TABLE public.bin_outbox   (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text, aggregateid text, type text, payload bytea);
CREATE TABLE public.fatal_outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text, aggregateid text, type text, payload jsonb);
CREATE TABLE public.strict_outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text, aggregateid text, type text, payload jsonb);
CREATE ROLE svc LOGIN;
`

const routingConfig = `outbox:
  - table: public.orders_outbox
    columns: {id: event_id, key: agg_id, payload: body, route_by: agg_type, type: event_type, timestamp: created_at}
    topic: "orders.${routedByValue}"
    route_regex: 'acme\.(?<routedByValue>[a-z]+)'
    headers: {tenant: tenant_id}
    partition_column: shard
    on_update: error
  - table: '"Billing"."Outbox"'
  - table: public.tomb_outbox
    tombstone_on_empty_payload: true
  - table: public.loose_outbox
    headers: {tenant: tenant, region: region}
    partition_column: shard
    on_missing_column: ignore
  - table: public.bin_outbox
    on_update: warn
  - table: public.fatal_outbox
    on_update: fatal
messages:
  - prefix: outbox
  - prefix: audit
    topic: audit.log
`

// TestRouting runs the relay binary with several outbox tables, each mapped
// by its own options, plus two logical-message prefixes, and checks every
// record's topic, key, value, headers, partition and timestamp in Kafka. It
// then checks on_missing_column at run time and every on_update behaviour,
// fatal last because it stops the relay.
func TestRouting(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(routingDDL, e.db)
	emitSQL, err := os.ReadFile("../configs/outbox_emit.sql")
	if err != nil {
		t.Fatal(err)
	}
	e.exec(string(emitSQL), e.db)

	t.Run("on_missing_column error stops at start-up", func(t *testing.T) {
		r := e.startRelay(e.config(`outbox:
  - table: public.strict_outbox
    headers: {tenant: tenant}
`), "RELAY_POSTGRES_SLOT=strict_slot", "RELAY_POSTGRES_PUBLICATION=strict_pub")
		code, out := r.wait(60 * time.Second)
		last := lastLine(out)
		if code == 0 || !strings.Contains(last, "public.strict_outbox") || !strings.Contains(last, `"tenant"`) {
			t.Fatalf("exit %d, want failure naming table and column; last line: %s", code, last)
		}
	})

	t.Run("existing insert-only publication: warns that updates go unseen", func(t *testing.T) {
		e.exec(`CREATE PUBLICATION legacy_pub FOR TABLE public.strict_outbox WITH (publish = 'insert')`, e.db)
		r := e.startRelay(e.config(`outbox:
  - table: public.strict_outbox
    on_update: fatal
`), "RELAY_POSTGRES_SLOT=legacy_slot", "RELAY_POSTGRES_PUBLICATION=legacy_pub")
		waitFor(t, 30*time.Second, "a warning that the publication hides updates", func() bool {
			return routingLogged(r, "warn", "does not publish updates", "public.strict_outbox (on_update: fatal)")
		})
		// The warning comes from the start-up checks, before the slot is
		// created: stopping right after it could leave no slot to drop.
		e.waitStreaming("legacy_slot")
		if code := r.stop(30 * time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
		e.dropSlot(t, "legacy_slot")
	})

	t.Run("on_update left at its default: insert-only publication", func(t *testing.T) {
		r := e.startRelay(e.config("outbox:\n  - table: public.strict_outbox\n"),
			"RELAY_POSTGRES_SLOT=default_slot", "RELAY_POSTGRES_PUBLICATION=default_pub")
		e.waitStreaming("default_slot")
		var ins, upd bool
		if err := e.scan("SELECT pubinsert, pubupdate FROM pg_publication WHERE pubname = 'default_pub'", nil, &ins, &upd); err != nil {
			t.Fatal(err)
		}
		if !ins || upd {
			t.Fatalf("publication publishes insert=%v update=%v, want insert only", ins, upd)
		}
		if code := r.stop(30 * time.Second); code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
		e.dropSlot(t, "default_slot")
	})

	r := e.startRelay(e.config(routingConfig))
	e.waitStreaming("outbox_relay")
	// An explicit on_update asks for a publication that publishes updates.
	var ins, upd, del bool
	if err := e.scan("SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = 'outbox_relay'", nil, &ins, &upd, &del); err != nil {
		t.Fatal(err)
	}
	if !ins || !upd || del {
		t.Fatalf("publication publishes insert=%v update=%v delete=%v, want insert and update only", ins, upd, del)
	}

	ctx := context.Background()
	conn := e.connect()
	sqlOK := func(c *pgx.Conn, sql string, args ...any) {
		t.Helper()
		if _, err := c.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	started := time.Now().Add(-time.Second)
	created := time.Date(2021, 3, 4, 5, 6, 7, 123e6, time.UTC)
	// One transaction mixing a table insert and a logical message.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO public.orders_outbox (agg_type, agg_id, event_type, body, created_at, tenant, shard) VALUES
			('acme.orders', 'o-1', 'OrderPlaced', '{"n": 1}', $1, 'acme', 2),
			('acme.orders', 'o-2', 'OrderPlaced', '{"n": 2}', $1, NULL, NULL),
			('legacy', NULL, 'OrderPlaced', '{"n": 3}', $1, 'old', 0)`, []any{created}},
		{`SELECT outbox_emit('Audit', NULL, 'Login', to_jsonb('user 7 logged in'::text), prefix => 'audit')`, nil},
	} {
		if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sqlOK(conn, `INSERT INTO "Billing"."Outbox" (aggregatetype, aggregateid, type, payload) VALUES
		('Invoice', 'inv-1', 'InvoiceIssued', '{"amount": 5}'), ('Invoice', 'inv-2', 'InvoiceVoided', NULL)`)
	sqlOK(conn, `INSERT INTO public.tomb_outbox (aggregatetype, aggregateid, type, payload) VALUES
		('Tomb', 't-1', 'Kept', 'hello'), ('Tomb', 't-2', 'Gone', ''), ('Tomb', 't-3', 'Gone', '   '), ('Tomb', 't-4', 'Gone', NULL)`)
	sqlOK(conn, `INSERT INTO public.loose_outbox (aggregatetype, aggregateid, type, payload, tenant) VALUES
		('Loose', 'l-1', 'Noted', 'v1', 'acme'), ('Loose', 'l-2', 'Noted', '', NULL)`)
	sqlOK(conn, `INSERT INTO public.bin_outbox (aggregatetype, aggregateid, type, payload) VALUES ('Bin', 'b-1', 'Blob', '\x00ff41'::bytea)`)
	sqlOK(conn, `INSERT INTO public.fatal_outbox (aggregatetype, aggregateid, type, payload) VALUES ('Fatal', 'f-1', 'Made', '{}')`)

	// The table-free outbox, called by an ordinary service role.
	svc, err := pgx.Connect(ctx, e.pg.URL("svc", e.db))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	var msgID string
	if err := svc.QueryRow(ctx, `SELECT outbox_emit('Order', 'o-9', 'OrderPaid', '{"total": 3}', headers => '{"tenant": "acme"}')::text`).Scan(&msgID); err != nil {
		t.Fatalf("outbox_emit as a service role: %v", err)
	}
	// Neither a rolled-back emit nor a non-transactional message is relayed.
	tx, err = svc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT outbox_emit('Rollback', 'x', 'Never', '{}')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	sqlOK(conn, `SELECT pg_logical_emit_message(false, 'outbox', '{"id": "nt-1", "aggregatetype": "NonTx", "payload": {}}')`)

	want := map[string]int{
		"orders.orders": 2, "legacy": 1, "audit.log": 1, "outbox.event.Invoice": 2, "outbox.event.Tomb": 4,
		"outbox.event.Loose": 2, "outbox.event.Bin": 1, "outbox.event.Fatal": 1, "outbox.event.Order": 1,
	}
	recs := routingWait(t, e, want, 60*time.Second)
	// The non-transactional message was written last, so its warning may
	// follow the records.
	waitFor(t, 30*time.Second, "a warning about the non-transactional message", func() bool {
		return routingLogged(r, "warn", "non-transactional", `"prefix":"outbox"`)
	})
	if !routingLogged(r, "warn", "route_regex does not match", `"route_by_value":"legacy"`) {
		t.Errorf("no warning for the route_by value the regex does not match")
	}

	byKey := map[string]devenv.Record{}
	var noKey []devenv.Record
	for _, rec := range recs {
		if rec.Key == nil {
			noKey = append(noKey, rec)
		} else {
			byKey[string(rec.Key)] = rec
		}
	}
	get := func(key string) devenv.Record {
		t.Helper()
		rec, ok := byKey[key]
		if !ok {
			t.Fatalf("no record with key %q", key)
		}
		return rec
	}
	murmur := func(key string) int32 { return javaPartition([]byte(key), e.parts) }

	// Custom mapping: regex, headers, explicit partition, timestamp column.
	o1 := get("o-1")
	if o1.Topic != "orders.orders" || string(o1.Value) != `{"n": 1}` || o1.Partition != 2 || o1.Headers["type"] != "OrderPlaced" ||
		o1.Headers["tenant_id"] != "acme" || o1.Headers["id"] == "" || !o1.Timestamp.Equal(created) {
		t.Errorf("o-1: %+v (want topic orders.orders, partition 2 from shard, tenant_id header, timestamp %v)", o1, created)
	}
	var o1ID string
	if err := e.scan(`SELECT event_id::text FROM public.orders_outbox WHERE agg_id = 'o-1'`, nil, &o1ID); err != nil || o1.Headers["id"] != o1ID {
		t.Errorf("o-1 id header %q, want the event_id column %q (%v)", o1.Headers["id"], o1ID, err)
	}
	o2 := get("o-2")
	if tenant, ok := o2.Headers["tenant_id"]; o2.Topic != "orders.orders" || o2.Partition != murmur("o-2") || !ok || tenant != "" {
		t.Errorf("o-2: %+v (want the murmur2 partition %d for a NULL shard and a tenant_id header, null, for a NULL tenant)", o2, murmur("o-2"))
	}
	// No key: the legacy row (NULL agg_id) and the audit message.
	slices.SortFunc(noKey, func(a, b devenv.Record) int { return strings.Compare(a.Topic, b.Topic) })
	if len(noKey) != 2 {
		t.Fatalf("want 2 records without a key, got %+v", noKey)
	}
	audit, legacy := noKey[0], noKey[1]
	if legacy.Topic != "legacy" || legacy.Partition != 0 || string(legacy.Value) != `{"n": 3}` {
		t.Errorf("unmatched regex: %+v, want topic \"legacy\" (the raw value, as Debezium), partition 0", legacy)
	}
	if audit.Topic != "audit.log" || string(audit.Value) != "user 7 logged in" || audit.Headers["type"] != "Login" || audit.Headers["id"] == "" {
		t.Errorf("audit message: %+v", audit)
	}

	// Defaults, in another schema with a mixed-case quoted name.
	inv1, inv2 := get("inv-1"), get("inv-2")
	if inv1.Topic != "outbox.event.Invoice" || string(inv1.Value) != `{"amount": 5}` || inv1.Partition != murmur("inv-1") ||
		inv1.Headers["type"] != "InvoiceIssued" || inv1.Timestamp.Before(started) || inv1.Timestamp.After(time.Now()) {
		t.Errorf("inv-1: %+v (want the commit time as timestamp)", inv1)
	}
	if inv2.Value != nil {
		t.Errorf("NULL payload without the tombstone option: value %q, want null", inv2.Value)
	}

	// Tombstones on empty, blank and NULL payloads.
	if v := get("t-1").Value; string(v) != "hello" {
		t.Errorf("t-1 value %q", v)
	}
	for _, k := range []string{"t-2", "t-3", "t-4"} {
		if rec := get(k); rec.Value != nil || rec.Topic != "outbox.event.Tomb" {
			t.Errorf("%s: %+v, want a tombstone (null value)", k, rec)
		}
	}

	// on_missing_column ignore: no region header, no shard column.
	l1, l2 := get("l-1"), get("l-2")
	if _, ok := l1.Headers["region"]; ok || l1.Headers["tenant"] != "acme" || l1.Partition != murmur("l-1") || string(l1.Value) != "v1" {
		t.Errorf("l-1: %+v", l1)
	}
	if l2.Value == nil || len(l2.Value) != 0 {
		t.Errorf("empty payload without the tombstone option: value %q (nil=%v), want empty but not null", l2.Value, l2.Value == nil)
	}

	if v := get("b-1").Value; string(v) != "\x00\xffA" {
		t.Errorf("bytea payload %x, want 00ff41", v)
	}
	o9 := get("o-9")
	if o9.Topic != "outbox.event.Order" || string(o9.Value) != `{"total": 3}` || o9.Headers["id"] != msgID ||
		o9.Headers["type"] != "OrderPaid" || o9.Headers["tenant"] != "acme" || o9.Partition != murmur("o-9") {
		t.Errorf("outbox_emit message: %+v (id %s)", o9, msgID)
	}

	// on_missing_column ignore at run time: a dropped header column is left
	// out and an added one used, without a restart.
	sqlOK(conn, `ALTER TABLE public.loose_outbox DROP COLUMN tenant, ADD COLUMN region text`)
	sqlOK(conn, `INSERT INTO public.loose_outbox (aggregatetype, aggregateid, type, payload, region) VALUES ('Loose', 'l-3', 'Noted', 'v3', 'eu')`)
	want["outbox.event.Loose"]++
	recs = routingWait(t, e, want, 30*time.Second)
	for _, rec := range recs {
		if string(rec.Key) == "l-3" {
			if _, ok := rec.Headers["tenant"]; ok || rec.Headers["region"] != "eu" {
				t.Errorf("l-3 after ALTER TABLE: headers %v, want region and no tenant", rec.Headers)
			}
		}
	}

	// on_update warn and error log and carry on; so does a table left at the
	// default, now that the publication publishes updates.
	sqlOK(conn, `UPDATE public.bin_outbox SET type = 'Changed'`)
	sqlOK(conn, `UPDATE public.orders_outbox SET event_type = 'Changed' WHERE agg_id = 'o-1'`)
	sqlOK(conn, `UPDATE "Billing"."Outbox" SET type = 'Changed' WHERE aggregateid = 'inv-1'`)
	for _, c := range []struct{ level, table string }{{"warn", "public.bin_outbox"}, {"error", "public.orders_outbox"}, {"warn", `Billing`}} {
		waitFor(t, 30*time.Second, c.level+" log line for the UPDATE on "+c.table, func() bool {
			return routingLogged(r, c.level, "UPDATE on outbox table", c.table)
		})
	}
	sqlOK(conn, `INSERT INTO "Billing"."Outbox" (aggregatetype, aggregateid, type, payload) VALUES ('Invoice', 'inv-3', 'InvoiceIssued', '{}')`)
	want["outbox.event.Invoice"]++
	recs = routingWait(t, e, want, 30*time.Second)
	for _, rec := range recs {
		if rec.Headers["type"] == "Changed" {
			t.Errorf("an UPDATE was relayed: %+v", rec)
		}
	}
	select {
	case <-r.done:
		t.Fatalf("relay exited after warn/error UPDATEs: %v", r.err)
	default:
	}

	// on_update fatal stops the relay, naming the table.
	sqlOK(conn, `UPDATE public.fatal_outbox SET type = 'Changed'`)
	code, out := r.wait(30 * time.Second)
	last := lastLine(out)
	if code == 0 || !strings.Contains(last, "public.fatal_outbox") || !strings.Contains(last, "on_update: fatal") {
		t.Fatalf("after an UPDATE under on_update fatal: exit %d, last line %s", code, last)
	}
}

// routingWait waits until Kafka holds exactly want records per topic and no
// other topic exists, and returns the records.
func routingWait(t *testing.T, e *env, want map[string]int, timeout time.Duration) []devenv.Record {
	t.Helper()
	var topics []string
	total := 0
	for tp, n := range want {
		topics = append(topics, tp)
		total += n
	}
	slices.Sort(topics)
	e.waitDelivered(total, timeout, topics...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	have, err := devenv.Topics(ctx, e.kafka.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// The relay's own progress topic is not a routed one.
	have = slices.DeleteFunc(have, func(tp string) bool { return tp == progressTopic })
	if !slices.Equal(have, topics) {
		t.Fatalf("topics %v, want %v", have, topics)
	}
	recs := e.readAll(topics...)
	got := map[string]int{}
	for _, r := range recs {
		got[r.Topic]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records per topic %v, want %v", got, want)
	}
	return recs
}

// routingLogged reports whether the relay logged a line at level containing
// every one of want.
func routingLogged(r *relay, level string, want ...string) bool {
	for _, line := range strings.Split(r.out.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["level"] != level {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return true
		}
	}
	return false
}
