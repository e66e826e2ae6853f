package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/internal/testutil"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput/pgoutputtest"
)

// Short names for the two wire values the mapping tests below use in almost
// every row.
var (
	txt     = pgoutputtest.Text
	colNull = pgoutputtest.Null
)

// Type OIDs of the payload types an outbox may use.
const (
	oidBytea   = 17
	oidText    = 25
	oidJSON    = 114
	oidVarchar = 1043
	oidJSONB   = 3802
	oidUUID    = 2950
	oidInt4    = 23
	oidTSTZ    = 1184
)

func outboxRelation(id uint32, ns, name string, payloadOID uint32, extra ...string) []byte {
	cols := []pgoutput.RelColumn{
		{Name: "id", TypeOID: oidUUID}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText},
		{Name: "type", TypeOID: oidText}, {Name: "payload", TypeOID: payloadOID},
	}
	for _, e := range extra {
		cols = append(cols, pgoutput.RelColumn{Name: e, TypeOID: oidText})
	}
	return pgoutputtest.Relation(pgoutput.Relation{ID: id, Namespace: ns, Name: name, Columns: cols})
}

// withDefaults fills what config.Load would: the Debezium defaults.
func withDefaults(t config.Table) config.Table {
	d := config.DefaultTable(t.Table)
	if t.Topic == "" {
		t.Topic = d.Topic
	}
	if t.Columns == (config.Columns{}) {
		t.Columns = d.Columns
	}
	if t.OnUpdate == "" {
		t.OnUpdate = d.OnUpdate
	}
	if t.OnMissingColumn == "" {
		t.OnMissingColumn = d.OnMissingColumn
	}
	return t
}

// logBuf collects the decoder's JSON log lines.
type logBuf struct{ testutil.Buffer }

// lines returns the logged lines at level that contain every one of want.
func (l *logBuf) lines(level string, want ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["level"] != level {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func newDecoderLog(t *testing.T, messages []config.Message, tables ...config.Table) (*Decoder, *logBuf) {
	t.Helper()
	for i := range tables {
		tables[i] = withDefaults(tables[i])
		// As config.Load does: Validate compiles route_regex.
		if err := tables[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	logs := &logBuf{}
	d, err := NewDecoder(tables, messages, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	return d, logs
}

func newTestDecoder(t *testing.T, tables ...config.Table) *Decoder {
	t.Helper()
	d, _ := newDecoderLog(t, []config.Message{{Prefix: "outbox", Topic: config.DefaultTopic}}, tables...)
	return d
}

func decodeOK(t *testing.T, d *Decoder, msg []byte) Result {
	t.Helper()
	r, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func eventOf(t *testing.T, d *Decoder, msg []byte) *Event {
	t.Helper()
	r := decodeOK(t, d, msg)
	if r.Kind != KindEvent {
		t.Fatalf("want an event, got %+v", r)
	}
	return r.Event
}

func header(ev *Event, key string) ([]byte, bool) {
	for _, h := range ev.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

func TestDecodeDebeziumDefaults(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"})
	r := decodeOK(t, d, pgoutputtest.Begin(pgoutput.Begin{FinalLSN: 100, CommitTime: 1_000_000}))
	if r.Kind != KindBegin || r.LSN != 100 {
		t.Fatalf("begin: %+v", r)
	}
	decodeOK(t, d, outboxRelation(7, "public", "outbox", oidJSONB))
	ev := eventOf(t, d, pgoutputtest.Insert(7, []pgoutput.Column{txt("0b0e-id"), txt("Order"), txt("o-1"), txt("OrderCreated"), txt(`{"a": 1}`)}))
	if ev.Topic != "outbox.event.Order" || string(ev.Key) != "o-1" || string(ev.Value) != `{"a": 1}` || ev.ID != "0b0e-id" || ev.Partition != -1 {
		t.Fatalf("event: %+v", ev)
	}
	if len(ev.Headers) != 2 || ev.Headers[0].Key != "id" || string(ev.Headers[0].Value) != "0b0e-id" || ev.Headers[1].Key != "type" || string(ev.Headers[1].Value) != "OrderCreated" {
		t.Fatalf("headers: %+v", ev.Headers)
	}
	if !ev.Timestamp.Equal(pgoutput.TimeFromPG(1_000_000)) {
		t.Fatalf("timestamp %v is not the commit time", ev.Timestamp)
	}
	// A NULL key is no key, not an empty one.
	ev = eventOf(t, d, pgoutputtest.Insert(7, []pgoutput.Column{txt("id-2"), txt("Order"), colNull, txt("T"), txt("{}")}))
	if ev.Key != nil {
		t.Fatalf("NULL aggregateid gave key %q", ev.Key)
	}
	r = decodeOK(t, d, pgoutputtest.Commit(pgoutput.Commit{CommitLSN: 100, EndLSN: 120}))
	if r.Kind != KindCommit || r.LSN != 120 {
		t.Fatalf("commit: %+v (want the end LSN)", r)
	}
}

func TestDecodeEventDoesNotAliasTheBuffer(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox", Headers: map[string]string{"tenant": "t"}})
	decodeOK(t, d, outboxRelation(7, "public", "outbox", oidText, "tenant"))
	msg := pgoutputtest.Insert(7, []pgoutput.Column{txt("id-1"), txt("Order"), txt("key"), txt("T"), txt("payload"), txt("acme")})
	ev := eventOf(t, d, msg)
	for i := range msg {
		msg[i] = 'X'
	}
	tenant, _ := header(ev, "t")
	if string(ev.Key) != "key" || string(ev.Value) != "payload" || string(ev.Headers[0].Value) != "id-1" || string(tenant) != "acme" || ev.Topic != "outbox.event.Order" {
		t.Fatalf("event changed with the buffer: %+v", ev)
	}
}

// TestDecodeCustomMapping covers the example table: every column
// renamed, a topic template with a Java-style named group, headers, an
// explicit partition and the timestamp column.
func TestDecodeCustomMapping(t *testing.T) {
	d := newTestDecoder(t, config.Table{
		Table:           "public.orders_outbox",
		Columns:         config.Columns{ID: "event_id", Key: "agg_id", Payload: "body", RouteBy: "agg_type", Type: "event_type", Timestamp: "created_at"},
		Topic:           "orders.${routedByValue}",
		RouteRegex:      "(?<routedByValue>.*)",
		Headers:         map[string]string{"tenant_id": "tenant", "region": ""},
		PartitionColumn: "shard",
	})
	decodeOK(t, d, pgoutputtest.Begin(pgoutput.Begin{FinalLSN: 1, CommitTime: 5_000_000}))
	decodeOK(t, d, pgoutputtest.Relation(pgoutput.Relation{ID: 9, Namespace: "public", Name: "orders_outbox", Columns: []pgoutput.RelColumn{
		{Name: "shard", TypeOID: oidInt4}, {Name: "event_id", TypeOID: oidUUID}, {Name: "agg_type", TypeOID: oidText},
		{Name: "agg_id", TypeOID: oidText}, {Name: "event_type", TypeOID: oidText}, {Name: "body", TypeOID: oidJSON},
		{Name: "created_at", TypeOID: oidTSTZ}, {Name: "tenant_id", TypeOID: oidText}, {Name: "region", TypeOID: oidText},
	}}))
	row := func(shard, ts, tenant pgoutput.Column) []byte {
		return pgoutputtest.Insert(9, []pgoutput.Column{shard, txt("e-1"), txt("Order"), txt("o-7"), txt("OrderPlaced"), txt(`{"n": 1}`), ts, tenant, txt("eu")})
	}
	ev := eventOf(t, d, row(txt("2"), txt("2026-01-02 03:04:05.5+01"), txt("acme")))
	if ev.Topic != "orders.Order" || string(ev.Key) != "o-7" || string(ev.Value) != `{"n": 1}` || ev.ID != "e-1" || ev.Partition != 2 {
		t.Fatalf("event: %+v", ev)
	}
	// id and type first, then the mapped columns sorted by column name.
	var got []string
	for _, h := range ev.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	if want := "id=e-1 type=OrderPlaced region=eu tenant=acme"; strings.Join(got, " ") != want {
		t.Fatalf("headers %q, want %q", strings.Join(got, " "), want)
	}
	if want := time.Date(2026, 1, 2, 2, 4, 5, 500e6, time.UTC); !ev.Timestamp.Equal(want) {
		t.Fatalf("timestamp %v, want %v from the column", ev.Timestamp, want)
	}
	// NULLs: the partitioner picks, the commit time stamps, and a NULL header
	// column is a header with a null value (Debezium adds it too).
	ev = eventOf(t, d, row(colNull, colNull, colNull))
	if ev.Partition != -1 || !ev.Timestamp.Equal(pgoutput.TimeFromPG(5_000_000)) {
		t.Fatalf("NULL partition/timestamp: %+v", ev)
	}
	if v, ok := header(ev, "tenant"); !ok || v != nil {
		t.Fatalf("NULL header column: present=%v value=%q, want a null-valued header", ok, v)
	}
	for _, bad := range []string{"-1", "x", "99999999999"} {
		if _, err := d.Decode(row(txt(bad), colNull, colNull)); err == nil || !strings.Contains(err.Error(), "shard") {
			t.Errorf("partition %q: want an error naming the column, got %v", bad, err)
		}
	}
	if _, err := d.Decode(row(colNull, txt("yesterday"), colNull)); err == nil || !strings.Contains(err.Error(), "created_at") {
		t.Errorf("bad timestamp: want an error naming the column, got %v", err)
	}
}

func TestParseTimestampForms(t *testing.T) {
	want := time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
	for _, s := range []string{
		"2026-03-04 05:06:07.123456+00",    // timestamptz, TimeZone UTC
		"2026-03-04 10:36:07.123456+05:30", // timestamptz elsewhere
		"2026-03-04 05:06:07.123456",       // timestamp without time zone: UTC
	} {
		got, err := parseTimestamp(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if got, err := parseTimestamp("1767225600000"); err != nil || got.UnixMilli() != 1767225600000 {
		t.Errorf("epoch milliseconds: %v, %v", got, err)
	}
}

// TestDecodeRouteRegex pins Debezium's route.topic.regex semantics: Kafka
// Connect's RegexRouter replaces the topic only when the regex matches the
// whole route-by value, and otherwise leaves the topic as the value itself.
func TestDecodeRouteRegex(t *testing.T) {
	cases := []struct {
		name, topic, regex, value, want string
	}{
		{"no regex", "outbox.event.${routedByValue}", "", "Order", "outbox.event.Order"},
		{"Java named group", "outbox.${routedByValue}.v1", `(?<routedByValue>.*)`, "Order", "outbox.Order.v1"},
		{"Go named group", "outbox.${routedByValue}.v1", `(?P<routedByValue>.*)`, "Order", "outbox.Order.v1"},
		{"part of the value", "events.${routedByValue}", `acme\.(?<routedByValue>[a-z]+)`, "acme.orders", "events.orders"},
		{"no match: the value itself", "events.${routedByValue}", `acme\.(?<routedByValue>[a-z]+)`, "other.orders", "other.orders"},
		{"substring match is no match", "events.${routedByValue}", `(?<routedByValue>[a-z]+)`, "orders.v2", "orders.v2"},
		{"alternation must cover the value", "t.${routedByValue}", `(?<routedByValue>a|ab)`, "ab", "t.ab"},
		{"case-insensitive flag stays inside", "t.${routedByValue}", `(?i)ORDER(?<routedByValue>S?)`, "orders", "t.s"},
		{"fixed replacement on match", "all-orders", `order.*(?<routedByValue>)`, "order-eu", "all-orders"},
		{"fixed replacement, no match", "all-orders", `order.*(?<routedByValue>)`, "invoice", "invoice"},
		{"fixed topic, no regex", "everything", "", "Order", "everything"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, logs := newDecoderLog(t, nil, config.Table{Table: "public.outbox", Topic: c.topic, RouteRegex: c.regex})
			decodeOK(t, d, outboxRelation(uint32(i+1), "public", "outbox", oidJSONB))
			for range 2 { // the second time from the cache
				ev := eventOf(t, d, pgoutputtest.Insert(uint32(i+1), []pgoutput.Column{txt("id"), txt(c.value), txt("k"), txt("T"), txt("{}")}))
				if ev.Topic != c.want {
					t.Fatalf("topic %q, want %q", ev.Topic, c.want)
				}
			}
			unmatched := logs.lines("warn", "route_regex does not match", c.value)
			if c.regex != "" && c.want == c.value && len(unmatched) != 1 {
				t.Fatalf("want one warning about the unmatched value, got %q", unmatched)
			}
		})
	}
}

func TestDecodeNullRouteBy(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"}, config.Table{Table: "public.fixed", Topic: "all.events"})
	decodeOK(t, d, outboxRelation(1, "public", "outbox", oidJSONB))
	decodeOK(t, d, outboxRelation(2, "public", "fixed", oidJSONB))
	_, err := d.Decode(pgoutputtest.Insert(1, []pgoutput.Column{txt("e-9"), colNull, txt("k"), txt("T"), txt("{}")}))
	if err == nil || !strings.Contains(err.Error(), "public.outbox") || !strings.Contains(err.Error(), "aggregatetype") || !strings.Contains(err.Error(), "e-9") {
		t.Fatalf("NULL route_by under a templated topic: want an error naming table, column and event, got %v", err)
	}
	// A fixed topic does not need the value.
	if ev := eventOf(t, d, pgoutputtest.Insert(2, []pgoutput.Column{txt("e-9"), colNull, txt("k"), txt("T"), txt("{}")})); ev.Topic != "all.events" {
		t.Fatalf("fixed topic: %+v", ev)
	}
}

// TestDecodePayloadTypesAndTombstones runs every payload type through NULL,
// empty, blank and ordinary values with and without the tombstone option.
func TestDecodePayloadTypesAndTombstones(t *testing.T) {
	type want struct {
		null  bool
		value string
	}
	textual := map[string]uint32{"jsonb": oidJSONB, "json": oidJSON, "text": oidText, "varchar": oidVarchar}
	for _, tomb := range []bool{false, true} {
		for name, oid := range textual {
			t.Run(fmt.Sprintf("%s/tombstone=%v", name, tomb), func(t *testing.T) {
				d := newTestDecoder(t, config.Table{Table: "public.outbox", TombstoneOnEmptyPayload: tomb})
				decodeOK(t, d, outboxRelation(3, "public", "outbox", oid))
				cases := []struct {
					col  pgoutput.Column
					want want
				}{
					{colNull, want{null: true}},                      // NULL is null either way, as Debezium writes it
					{txt(""), want{null: tomb, value: ""}},           // empty
					{txt(" \t\n"), want{null: tomb, value: " \t\n"}}, // blank, as Java's trim().isEmpty()
					{txt(`{"x": "ü"}`), want{value: `{"x": "ü"}`}},
					{txt(`""`), want{value: `""`}}, // a JSON empty string is not an empty payload
				}
				for _, c := range cases {
					ev := eventOf(t, d, pgoutputtest.Insert(3, []pgoutput.Column{txt("id"), txt("Order"), txt("k"), txt("T"), c.col}))
					if (ev.Value == nil) != c.want.null || (!c.want.null && string(ev.Value) != c.want.value) {
						t.Errorf("payload %q (%c): value %q (nil=%v), want %+v", c.col.Data, c.col.Kind, ev.Value, ev.Value == nil, c.want)
					}
				}
			})
		}
		t.Run(fmt.Sprintf("bytea/tombstone=%v", tomb), func(t *testing.T) {
			d := newTestDecoder(t, config.Table{Table: "public.outbox", TombstoneOnEmptyPayload: tomb})
			decodeOK(t, d, outboxRelation(4, "public", "outbox", oidBytea))
			cases := []struct {
				col  pgoutput.Column
				want []byte
				null bool
			}{
				{colNull, nil, true},
				{txt(`\x`), []byte{}, tomb},
				{txt(`\x00ff20`), []byte{0, 0xff, 0x20}, false},
				{txt(`\x2020`), []byte("  "), false}, // binary: blank bytes are data
			}
			for _, c := range cases {
				ev := eventOf(t, d, pgoutputtest.Insert(4, []pgoutput.Column{txt("id"), txt("Order"), txt("k"), txt("T"), c.col}))
				if (ev.Value == nil) != c.null || (!c.null && !bytes.Equal(ev.Value, c.want)) {
					t.Errorf("bytea %q: value %x (nil=%v), want %x (null=%v)", c.col.Data, ev.Value, ev.Value == nil, c.want, c.null)
				}
			}
			if _, err := d.Decode(pgoutputtest.Insert(4, []pgoutput.Column{txt("id"), txt("Order"), txt("k"), txt("T"), txt(`\000`)})); err == nil || !strings.Contains(err.Error(), "bytea_output") {
				t.Errorf("escape-format bytea: want an error pointing at bytea_output, got %v", err)
			}
		})
	}
}

// TestDecodeUpdateBehaviour covers table.op.invalid.behavior: warn and error
// log and skip, fatal stops naming the table. Deletes are always ignored.
func TestDecodeUpdateBehaviour(t *testing.T) {
	for _, mode := range []string{"warn", "error", "fatal"} {
		t.Run(mode, func(t *testing.T) {
			d, logs := newDecoderLog(t, nil, config.Table{Table: `"Sales"."Outbox"`, OnUpdate: config.OnUpdate(mode)})
			decodeOK(t, d, outboxRelation(5, "Sales", "Outbox", oidJSONB))
			newRow := []pgoutput.Column{txt("e-1"), txt("Order"), txt("k"), txt("Changed"), txt("{}")}
			r, err := d.Decode(pgoutputtest.Update(5, 'K', []pgoutput.Column{txt("e-1"), colNull, colNull, colNull, colNull}, newRow))
			switch mode {
			case "fatal":
				if err == nil || !strings.Contains(err.Error(), `"Sales"."Outbox"`) || !strings.Contains(err.Error(), "e-1") || !strings.Contains(err.Error(), "on_update: fatal") {
					t.Fatalf("want an error naming table, event and setting, got %v", err)
				}
			default:
				if err != nil || r.Kind != KindNone {
					t.Fatalf("update: %+v, %v; want nothing relayed and no error", r, err)
				}
				if got := logs.lines(mode, "UPDATE", `Sales`, "e-1"); len(got) != 1 {
					t.Fatalf("want one %s line naming the table and event, got %q", mode, logs.lines(mode))
				}
			}
			if r, err := d.Decode(pgoutputtest.Delete(5, 'K', []pgoutput.Column{txt("e-1"), colNull, colNull, colNull, colNull})); err != nil || r.Kind != KindNone {
				t.Fatalf("delete: %+v, %v; want it ignored", r, err)
			}
		})
	}
}

func TestDecodeMissingColumn(t *testing.T) {
	t.Run("mapped column", func(t *testing.T) {
		// on_missing_column does not cover the mapped columns: there is no
		// event without them.
		d := newTestDecoder(t, config.Table{Table: "public.outbox", OnMissingColumn: "ignore"})
		_, err := d.Decode(pgoutputtest.Relation(pgoutput.Relation{ID: 3, Namespace: "public", Name: "outbox", Columns: []pgoutput.RelColumn{{Name: "id"}, {Name: "aggregateid"}}}))
		if err == nil || !strings.Contains(err.Error(), "public.outbox") || !strings.Contains(err.Error(), `"payload"`) {
			t.Fatalf("want error naming table and column, got %v", err)
		}
		if _, err := d.Decode(pgoutputtest.Insert(3, []pgoutput.Column{txt("1"), txt("2")})); err == nil {
			t.Fatal("a relation that failed to map must not be used for its rows")
		}
	})
	t.Run("error", func(t *testing.T) {
		d := newTestDecoder(t, config.Table{Table: "public.outbox", Headers: map[string]string{"tenant": "t"}, PartitionColumn: "shard"})
		_, err := d.Decode(outboxRelation(3, "public", "outbox", oidJSONB))
		if err == nil || !strings.Contains(err.Error(), `"tenant"`) || !strings.Contains(err.Error(), `"shard"`) {
			t.Fatalf("want an error naming both additional columns, got %v", err)
		}
	})
	t.Run("ignore", func(t *testing.T) {
		d, logs := newDecoderLog(t, nil, config.Table{Table: "public.outbox", OnMissingColumn: "ignore",
			Headers: map[string]string{"tenant": "t", "region": "r"}, PartitionColumn: "shard"})
		decodeOK(t, d, outboxRelation(3, "public", "outbox", oidJSONB, "region"))
		ev := eventOf(t, d, pgoutputtest.Insert(3, []pgoutput.Column{txt("e"), txt("Order"), txt("k"), txt("T"), txt("{}"), txt("eu")}))
		if _, ok := header(ev, "t"); ok || ev.Partition != -1 {
			t.Fatalf("missing columns should be left out: %+v", ev)
		}
		if v, _ := header(ev, "r"); string(v) != "eu" {
			t.Fatalf("present column lost: %+v", ev.Headers)
		}
		if got := logs.lines("warn", "on_missing_column: ignore"); len(got) != 2 {
			t.Fatalf("want a warning per missing column, got %q", got)
		}
		// ALTER TABLE ... ADD COLUMN: the next pgoutput.Relation message maps them.
		decodeOK(t, d, outboxRelation(3, "public", "outbox", oidJSONB, "region", "tenant", "shard"))
		ev = eventOf(t, d, pgoutputtest.Insert(3, []pgoutput.Column{txt("e"), txt("Order"), txt("k"), txt("T"), txt("{}"), txt("eu"), txt("acme"), txt("1")}))
		if v, _ := header(ev, "t"); string(v) != "acme" || ev.Partition != 1 {
			t.Fatalf("added columns not used: %+v", ev)
		}
	})
}

// TestDecodeSeveralTables maps tables of several schemas, with quoted
// mixed-case names, each by its own options.
func TestDecodeSeveralTables(t *testing.T) {
	d := newTestDecoder(t,
		config.Table{Table: "public.outbox"},
		config.Table{Table: `"Sales"."Outbox"`, Topic: "sales.${routedByValue}", TombstoneOnEmptyPayload: true},
		config.Table{Table: `billing."Weird ""Name"""`, Topic: "billing", Headers: map[string]string{"tenant": ""}},
	)
	decodeOK(t, d, outboxRelation(1, "public", "outbox", oidJSONB))
	decodeOK(t, d, outboxRelation(2, "Sales", "Outbox", oidText))
	decodeOK(t, d, outboxRelation(3, "billing", `Weird "Name"`, oidBytea, "tenant"))
	decodeOK(t, d, outboxRelation(4, "sales", "outbox", oidJSONB)) // not configured: case matters once quoted
	row := []pgoutput.Column{txt("e"), txt("Order"), txt("k"), txt("T"), txt("")}
	if ev := eventOf(t, d, pgoutputtest.Insert(1, row)); ev.Topic != "outbox.event.Order" || ev.Value == nil || ev.Table != "public.outbox" {
		t.Fatalf("public.outbox: %+v", ev)
	}
	if ev := eventOf(t, d, pgoutputtest.Insert(2, row)); ev.Topic != "sales.Order" || ev.Value != nil || ev.Table != `"Sales"."Outbox"` {
		t.Fatalf("Sales.Outbox: %+v", ev)
	}
	ev := eventOf(t, d, pgoutputtest.Insert(3, []pgoutput.Column{txt("e"), txt("Order"), txt("k"), txt("T"), txt(`\x41`), txt("acme")}))
	if v, _ := header(ev, "tenant"); ev.Topic != "billing" || string(ev.Value) != "A" || string(v) != "acme" {
		t.Fatalf("billing: %+v", ev)
	}
	if r := decodeOK(t, d, pgoutputtest.Insert(4, row)); r.Kind != KindNone {
		t.Fatalf("unconfigured sales.outbox relayed: %+v", r)
	}
}

func TestDecodeOtherTablesIgnored(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"})
	decodeOK(t, d, pgoutputtest.Relation(pgoutput.Relation{ID: 4, Namespace: "public", Name: "orders", Columns: []pgoutput.RelColumn{{Name: "x"}}}))
	if r := decodeOK(t, d, pgoutputtest.Insert(4, []pgoutput.Column{txt("1")})); r.Kind != KindNone {
		t.Fatalf("insert into a non-outbox table produced %+v", r)
	}
	if r := decodeOK(t, d, pgoutputtest.Update(4, 0, nil, []pgoutput.Column{txt("1")})); r.Kind != KindNone {
		t.Fatalf("update of a non-outbox table produced %+v", r)
	}
	if _, err := d.Decode(pgoutputtest.Insert(99, []pgoutput.Column{txt("1")})); err == nil {
		t.Fatal("insert for an unknown relation must be an error, not a silent skip")
	}
}

func TestDecodeLogicalMessage(t *testing.T) {
	d, logs := newDecoderLog(t, []config.Message{{Prefix: "outbox", Topic: config.DefaultTopic}, {Prefix: "audit", Topic: "audit.events"}})
	decodeOK(t, d, pgoutputtest.Begin(pgoutput.Begin{FinalLSN: 9, CommitTime: 7_000_000}))
	msg := func(flags uint8, prefix, content string) []byte {
		return pgoutputtest.Message(pgoutput.Message{Flags: flags, LSN: 0x1_0000_0005, Prefix: []byte(prefix), Content: []byte(content)})
	}
	raw := msg(1, "outbox", `{"id":"e1","aggregatetype":"Order","aggregateid":"o-9","type":"OrderPaid","payload":{"total": 3},"headers":{"z":"last","tenant":"t","n":7,"gone":null}}`)
	ev := eventOf(t, d, raw)
	for i := range raw {
		raw[i] = 'X' // the event must own its bytes
	}
	if ev.Topic != "outbox.event.Order" || string(ev.Key) != "o-9" || string(ev.Value) != `{"total": 3}` || ev.ID != "e1" ||
		ev.Partition != -1 || ev.Table != "message:outbox" || !ev.Timestamp.Equal(pgoutput.TimeFromPG(7_000_000)) {
		t.Fatalf("message event: %+v", ev)
	}
	var got []string
	for _, h := range ev.Headers {
		if h.Value == nil {
			got = append(got, h.Key+"=<null>")
		} else {
			got = append(got, h.Key+"="+string(h.Value))
		}
	}
	if want := "id=e1 type=OrderPaid gone=<null> n=7 tenant=t z=last"; strings.Join(got, " ") != want {
		t.Fatalf("headers %q, want %q", strings.Join(got, " "), want)
	}

	cases := []struct {
		name, prefix, content string
		topic, key, value     string
		noKey, null           bool
	}{
		{"text payload", "outbox", `{"id":"e2","aggregatetype":"Order","aggregateid":"o","payload":"plain \"text\""}`, "outbox.event.Order", "o", `plain "text"`, false, false},
		{"null payload", "outbox", `{"id":"e3","aggregatetype":"Order","aggregateid":"o","payload":null}`, "outbox.event.Order", "o", "", false, true},
		{"no payload", "outbox", `{"id":"e4","aggregatetype":"Order","aggregateid":"o"}`, "outbox.event.Order", "o", "", false, true},
		{"empty string payload", "outbox", `{"id":"e5","aggregatetype":"Order","aggregateid":"o","payload":""}`, "outbox.event.Order", "o", "", false, false},
		{"null key", "outbox", `{"id":"e6","aggregatetype":"Order","aggregateid":null,"payload":[1]}`, "outbox.event.Order", "", "[1]", true, false},
		{"numeric id and key", "outbox", `{"id":42,"aggregatetype":"Order","aggregateid":7,"payload":1}`, "outbox.event.Order", "7", "1", false, false},
		{"fixed topic needs no aggregatetype", "audit", `{"id":"e7","payload":{}}`, "audit.events", "", "{}", true, false},
	}
	for _, c := range cases {
		ev := eventOf(t, d, msg(1, c.prefix, c.content))
		if ev.Topic != c.topic || (ev.Key == nil) != c.noKey || string(ev.Key) != c.key || (ev.Value == nil) != c.null || string(ev.Value) != c.value {
			t.Errorf("%s: %+v (key nil=%v, value nil=%v)", c.name, ev, ev.Key == nil, ev.Value == nil)
		}
	}

	// Non-transactional and unknown-prefix messages are not events.
	if r := decodeOK(t, d, msg(0, "outbox", `{"id":"n"}`)); r.Kind != KindNone {
		t.Fatalf("non-transactional message relayed: %+v", r)
	}
	if got := logs.lines("warn", "non-transactional", "outbox"); len(got) != 1 {
		t.Fatalf("want a warning for the non-transactional message, got %q", got)
	}
	if r := decodeOK(t, d, msg(1, "other", `{"id":"n"}`)); r.Kind != KindNone {
		t.Fatalf("unknown prefix relayed: %+v", r)
	}

	for name, content := range map[string]string{
		"not json":            "not json",
		"no id":               `{"aggregatetype":"Order"}`,
		"empty id":            `{"id":"","aggregatetype":"Order"}`,
		"no aggregatetype":    `{"id":"e"}`,
		"null aggregatetype":  `{"id":"e","aggregatetype":null}`,
		"not an object":       `["id"]`,
		"headers not objects": `{"id":"e","aggregatetype":"A","headers":[1]}`,
	} {
		_, err := d.Decode(msg(1, "outbox", content))
		if err == nil || !strings.Contains(err.Error(), `"outbox"`) || !strings.Contains(err.Error(), "1/5") {
			t.Errorf("%s: want an error naming prefix and LSN, got %v", name, err)
		}
	}
}

func BenchmarkDecodeInsert(b *testing.B) {
	d, _ := NewDecoder([]config.Table{config.DefaultTable("public.outbox")}, nil, zerolog.Nop())
	if _, err := d.Decode(outboxRelation(7, "public", "outbox", oidJSONB)); err != nil {
		b.Fatal(err)
	}
	msg := pgoutputtest.Insert(7, []pgoutput.Column{txt("8f1c6a3e-7f0a-4d2b-9a51-3c0f5c2b9e11"), txt("Order"), txt("order-123"), txt("OrderCreated"),
		txt(`{"orderId":"order-123","customer":"c-42","total":129.95,"currency":"EUR","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"padding to ~200 bytes"}`)})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode feeds arbitrary messages to a decoder that knows an outbox
// relation with every optional mapping in use: whatever arrives, the result is
// an event, nothing, or an error, never a panic.
func FuzzDecode(f *testing.F) {
	f.Add(pgoutputtest.Insert(9, []pgoutput.Column{txt("id"), txt("acme.Order"), txt("k"), txt("T"), txt(`\x00ff`), txt("t1"), txt("2"), txt("2026-01-02 03:04:05+00")}))
	f.Add(pgoutputtest.Insert(9, []pgoutput.Column{txt("id"), {Kind: 'n'}, txt("k"), txt("T"), txt(`\xzz`), txt("t1"), txt("-1"), txt("never")}))
	f.Add(pgoutputtest.Insert(9, []pgoutput.Column{txt("id")}))
	f.Add(pgoutputtest.Update(9, 0, nil, []pgoutput.Column{txt("id")}))
	f.Add(pgoutputtest.Message(pgoutput.Message{Flags: 1, Prefix: []byte("outbox"), Content: []byte(`{"id":1,"aggregatetype":null,"payload":"x","headers":{"a":null}}`)}))
	f.Add(pgoutputtest.Begin(pgoutput.Begin{FinalLSN: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newTestDecoder(t, config.Table{
			Table:           "app.orders_outbox",
			Columns:         config.Columns{ID: "id", Key: "aggregateid", Payload: "payload", RouteBy: "aggregatetype", Type: "type", Timestamp: "created"},
			Topic:           "orders.${routedByValue}",
			RouteRegex:      `^acme\.(?P<routedByValue>.*)$`,
			Headers:         map[string]string{"tenant": "x-tenant"},
			PartitionColumn: "shard",
			OnUpdate:        "error",
		})
		if _, err := d.Decode(outboxRelation(9, "app", "orders_outbox", 17, "tenant", "shard", "created")); err != nil {
			t.Fatal(err)
		}
		r, err := d.Decode(data)
		if err == nil && r.Kind == KindEvent && r.Event == nil {
			t.Fatal("event result without an event")
		}
	})
}

// TestDecodePartitionUnderItsOwnName maps rows that arrive under a
// partition's name to the configured partitioned table they belong to, and
// leaves other unconfigured tables alone.
func TestDecodePartitionUnderItsOwnName(t *testing.T) {
	d, logs := newDecoderLog(t, nil, withDefaults(config.Table{Table: "public.outbox"}))
	asked := map[string]int{}
	d.ResolvePartitions(func(schema, name string) ([]string, error) {
		asked[schema+"."+name]++
		switch name {
		case "outbox_2026_01":
			return []string{"public.outbox_mid", "public.outbox"}, nil
		case "broken":
			return nil, errors.New("catalog unreachable")
		}
		return nil, nil
	})
	decodeOK(t, d, outboxRelation(11, "public", "outbox_2026_01", oidJSONB))
	ev := eventOf(t, d, pgoutputtest.Insert(11, []pgoutput.Column{txt("p-1"), txt("Order"), txt("o-1"), txt("T"), txt("{}")}))
	if ev.Table != "public.outbox" || ev.Topic != "outbox.event.Order" || ev.ID != "p-1" {
		t.Fatalf("partition row mapped as %+v", ev)
	}
	if len(logs.lines("warn", "partition")) != 1 {
		t.Errorf("want one warning naming the partition")
	}
	decodeOK(t, d, outboxRelation(12, "public", "other", oidJSONB))
	if r := decodeOK(t, d, pgoutputtest.Insert(12, []pgoutput.Column{txt("x"), txt("Order"), txt("o-1"), txt("T"), txt("{}")})); r.Kind != KindNone {
		t.Errorf("row of an unrelated table decoded as %v", r.Kind)
	}
	// The configured table itself is never looked up.
	decodeOK(t, d, outboxRelation(13, "public", "outbox", oidJSONB))
	if asked["public.outbox"] != 0 || asked["public.outbox_2026_01"] != 1 {
		t.Errorf("lookups: %v", asked)
	}
	if _, err := d.Decode(outboxRelation(14, "public", "broken", oidJSONB)); err == nil {
		t.Error("a failed lookup was ignored")
	}
}
