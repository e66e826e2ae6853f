package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestColumnTypesCheckAndRun runs every column type the mapping accepts for
// an id and a key through `relay check` and `relay run`: check must pass each
// (it once refused a bigint id that run relayed), run must start (its start-up
// checks use the same rules) and relay the key as the column's text form and
// the id header likewise. A table whose route_by and type are integers and
// whose timestamp is epoch milliseconds rides along, since those are accepted
// too. If check and run disagreed on any type, either check would exit 1 or
// run would stop at start-up.
func TestColumnTypesCheckAndRun(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec("CREATE EXTENSION citext", e.db)

	type typeCase struct {
		name, typ string
		id, key   string // SQL literals
		wantID    string // text form in the id header
		wantKey   string // text form as the record key
	}
	cases := []typeCase{
		{"uuid", "uuid", "'5B7C2D4E-1111-4A2B-8C3D-000000000001'", "'0b5f0000-2222-4a2b-8c3d-000000000002'",
			"5b7c2d4e-1111-4a2b-8c3d-000000000001", "0b5f0000-2222-4a2b-8c3d-000000000002"},
		{"text", "text", "'ev-1'", "'order-1'", "ev-1", "order-1"},
		{"varchar", "varchar(64)", "'ev-2'", "'order-2'", "ev-2", "order-2"},
		{"char", "char(8)", "'ev-3'", "'ord-3'", "ev-3    ", "ord-3   "},
		{"name", "name", "'ev-4'", "'order-4'", "ev-4", "order-4"},
		{"citext", "citext", "'Ev-5'", "'Order-5'", "Ev-5", "Order-5"},
		{"smallint", "smallint", "-7", "32767", "-7", "32767"},
		{"integer", "integer", "2147483647", "-2147483648", "2147483647", "-2147483648"},
		{"bigint", "bigint", "9007199254740993", "-9223372036854775808", "9007199254740993", "-9223372036854775808"},
	}
	var cfg strings.Builder
	cfg.WriteString("outbox:\n")
	for _, c := range cases {
		e.exec(fmt.Sprintf(`CREATE TABLE public.ct_%s (id %s PRIMARY KEY, aggregatetype text NOT NULL, aggregateid %s, type text, payload jsonb)`,
			c.name, c.typ, c.typ), e.db)
		fmt.Fprintf(&cfg, "  - table: public.ct_%s\n    topic: \"coltypes.${routedByValue}\"\n", c.name)
	}
	e.exec(`CREATE TABLE public.ct_ints (id bigint PRIMARY KEY, aggregatetype integer NOT NULL, aggregateid bigint, type smallint, payload text, at bigint)`, e.db)
	cfg.WriteString("  - table: public.ct_ints\n    topic: \"coltypes.int.${routedByValue}\"\n    columns: {timestamp: at}\n")
	config := e.config(cfg.String())

	out, code := runRelay(t, config, "check")
	t.Logf("relay check:\n%s", out)
	if code != 0 || len(failedLines(out)) > 0 {
		t.Fatalf("relay check exited %d on accepted column types:\n%s", code, out)
	}
	for _, c := range cases {
		if !strings.Contains(out, "✓ table public.ct_"+c.name+":") {
			t.Errorf("no ✓ line for public.ct_%s:\n%s", c.name, out)
		}
	}

	r := e.startRelay(config)
	e.waitStreaming("outbox_relay")
	for _, c := range cases {
		e.exec(fmt.Sprintf(`INSERT INTO public.ct_%s VALUES (%s, 'ct_%s', %s, 'Created', '{"n": 1}')`, c.name, c.id, c.name, c.key), e.db)
	}
	const at = 1700000000123
	e.exec(fmt.Sprintf(`INSERT INTO public.ct_ints VALUES (9223372036854775807, 42, 12345678901, 7, 'plain', %d)`, at), e.db)

	topics := []string{"coltypes.int.42"}
	for _, c := range cases {
		topics = append(topics, "coltypes.ct_"+c.name)
	}
	e.waitDelivered(len(topics), 60*time.Second, topics...)
	r.mustBeRunning()
	byTopic := map[string]int{}
	for _, rec := range e.readAll(topics...) {
		byTopic[rec.Topic]++
		switch rec.Topic {
		case "coltypes.int.42":
			if rec.Headers["id"] != "9223372036854775807" || string(rec.Key) != "12345678901" || rec.Headers["type"] != "7" ||
				string(rec.Value) != "plain" || rec.Timestamp.UnixMilli() != at {
				t.Errorf("integer mapping: key %q id %q type %q value %q timestamp %d", rec.Key, rec.Headers["id"], rec.Headers["type"], rec.Value, rec.Timestamp.UnixMilli())
			}
			continue
		}
		for _, c := range cases {
			if rec.Topic != "coltypes.ct_"+c.name {
				continue
			}
			if rec.Headers["id"] != c.wantID || string(rec.Key) != c.wantKey || string(rec.Value) != `{"n": 1}` || rec.Headers["type"] != "Created" {
				t.Errorf("%s: key %q (want %q), id header %q (want %q), value %q, type %q",
					c.typ, rec.Key, c.wantKey, rec.Headers["id"], c.wantID, rec.Value, rec.Headers["type"])
			}
		}
	}
	for _, topic := range topics {
		if byTopic[topic] != 1 {
			t.Errorf("topic %s has %d records, want 1", topic, byTopic[topic])
		}
	}
	if code := r.stop(60 * time.Second); code != 0 {
		t.Errorf("relay exited %d after SIGTERM", code)
	}
}
