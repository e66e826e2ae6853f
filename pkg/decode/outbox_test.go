package decode

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
)

func outboxRelation(id uint32, ns, name string, payloadOID uint32, extra ...string) []byte {
	cols := []RelColumn{
		{Name: "id", TypeOID: 2950}, {Name: "aggregatetype", TypeOID: 25}, {Name: "aggregateid", TypeOID: 25},
		{Name: "type", TypeOID: 25}, {Name: "payload", TypeOID: payloadOID},
	}
	for _, e := range extra {
		cols = append(cols, RelColumn{Name: e, TypeOID: 25})
	}
	return buildRelation(Relation{ID: id, Namespace: ns, Name: name, Columns: cols})
}

func newTestDecoder(t *testing.T, tables ...config.Table) *Decoder {
	t.Helper()
	cfg := config.Config{Outbox: tables}
	for i := range cfg.Outbox {
		d := config.DefaultTable(cfg.Outbox[i].Table)
		if cfg.Outbox[i].Topic == "" {
			cfg.Outbox[i].Topic = d.Topic
		}
		if cfg.Outbox[i].Columns == (config.Columns{}) {
			cfg.Outbox[i].Columns = d.Columns
		}
		if cfg.Outbox[i].OnUpdate == "" {
			cfg.Outbox[i].OnUpdate = "warn"
		}
	}
	d, err := NewDecoder(cfg.Outbox, []config.Message{{Prefix: "outbox", Topic: config.DefaultTopic}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
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

func TestDecodeDebeziumDefaults(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"})
	r := decodeOK(t, d, buildBegin(Begin{FinalLSN: 100, CommitTime: 1_000_000}))
	if r.Kind != KindBegin || r.LSN != 100 {
		t.Fatalf("begin: %+v", r)
	}
	decodeOK(t, d, outboxRelation(7, "public", "outbox", 3802))
	r = decodeOK(t, d, buildInsert(7, []Column{txt("0b0e-id"), txt("Order"), txt("o-1"), txt("OrderCreated"), txt(`{"a": 1}`)}))
	if r.Kind != KindEvent {
		t.Fatalf("insert: %+v", r)
	}
	ev := r.Event
	if ev.Topic != "outbox.event.Order" || string(ev.Key) != "o-1" || string(ev.Value) != `{"a": 1}` || ev.ID != "0b0e-id" || ev.Partition != -1 {
		t.Fatalf("event: %+v", ev)
	}
	if len(ev.Headers) != 2 || ev.Headers[0].Key != "id" || string(ev.Headers[0].Value) != "0b0e-id" || ev.Headers[1].Key != "type" || string(ev.Headers[1].Value) != "OrderCreated" {
		t.Fatalf("headers: %+v", ev.Headers)
	}
	if !ev.Timestamp.Equal(TimeFromPG(1_000_000)) {
		t.Fatalf("timestamp %v is not the commit time", ev.Timestamp)
	}
	// Deletes and updates are not events.
	if r := decodeOK(t, d, buildDelete(7, 'K', []Column{txt("x")})); r.Kind != KindNone {
		t.Fatalf("delete produced %+v", r)
	}
	if r := decodeOK(t, d, buildUpdate(7, 0, nil, []Column{txt("x"), txt("a"), txt("b"), txt("c"), txt("d")})); r.Kind != KindNone {
		t.Fatalf("update produced %+v", r)
	}
	r = decodeOK(t, d, buildCommit(Commit{CommitLSN: 100, EndLSN: 120}))
	if r.Kind != KindCommit || r.LSN != 120 {
		t.Fatalf("commit: %+v (want the end LSN)", r)
	}
}

func TestDecodeEventDoesNotAliasTheBuffer(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"})
	decodeOK(t, d, outboxRelation(7, "public", "outbox", 25))
	msg := buildInsert(7, []Column{txt("id-1"), txt("Order"), txt("key"), txt("T"), txt("payload")})
	ev := decodeOK(t, d, msg).Event
	for i := range msg {
		msg[i] = 'X'
	}
	if string(ev.Key) != "key" || string(ev.Value) != "payload" || string(ev.Headers[0].Value) != "id-1" {
		t.Fatalf("event changed with the buffer: %+v", ev)
	}
}

func TestDecodeCustomMappingRegexHeadersPartition(t *testing.T) {
	d := newTestDecoder(t, config.Table{
		Table:           "app.orders_outbox",
		Columns:         config.Columns{ID: "id", Key: "aggregateid", Payload: "payload", RouteBy: "aggregatetype", Type: "type", Timestamp: "created"},
		Topic:           "orders.${routedByValue}",
		RouteRegex:      `^acme\.(?P<routedByValue>.*)$`,
		Headers:         map[string]string{"tenant": "x-tenant"},
		PartitionColumn: "shard",
		OnUpdate:        "fatal",
	})
	decodeOK(t, d, outboxRelation(9, "app", "orders_outbox", 17, "tenant", "shard", "created"))
	ev := decodeOK(t, d, buildInsert(9, []Column{txt("id"), txt("acme.Order"), txt("k"), txt("T"), txt(`\x00ff10`), txt("t1"), txt("2"), txt("2026-01-02 03:04:05.5+00")})).Event
	if ev.Topic != "orders.Order" || !bytes.Equal(ev.Value, []byte{0, 0xff, 0x10}) || ev.Partition != 2 {
		t.Fatalf("event: %+v", ev)
	}
	if got := ev.Headers[len(ev.Headers)-1]; got.Key != "x-tenant" || string(got.Value) != "t1" {
		t.Fatalf("header: %+v", got)
	}
	if ev.Timestamp.UTC().Format("2006-01-02T15:04:05.0") != "2026-01-02T03:04:05.5" {
		t.Fatalf("timestamp from column: %v", ev.Timestamp)
	}
	_, err := d.Decode(buildUpdate(9, 0, nil, []Column{txt("id"), txt("a"), txt("k"), txt("T"), txt(`\x00`), txt("t"), txt("1"), txt("2026-01-01 00:00:00")}))
	if err == nil || !strings.Contains(err.Error(), "app.orders_outbox") {
		t.Fatalf("on_update fatal: want an error naming the table, got %v", err)
	}
}

func TestDecodeMissingColumnNamesTableAndColumn(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"})
	rel := buildRelation(Relation{ID: 3, Namespace: "public", Name: "outbox", Columns: []RelColumn{{Name: "id"}, {Name: "aggregateid"}}})
	_, err := d.Decode(rel)
	if err == nil || !strings.Contains(err.Error(), "public.outbox") || !strings.Contains(err.Error(), `"payload"`) {
		t.Fatalf("want error naming table and column, got %v", err)
	}
}

func TestDecodeOtherTablesIgnored(t *testing.T) {
	d := newTestDecoder(t, config.Table{Table: "public.outbox"})
	decodeOK(t, d, buildRelation(Relation{ID: 4, Namespace: "public", Name: "orders", Columns: []RelColumn{{Name: "x"}}}))
	if r := decodeOK(t, d, buildInsert(4, []Column{txt("1")})); r.Kind != KindNone {
		t.Fatalf("insert into a non-outbox table produced %+v", r)
	}
	if _, err := d.Decode(buildInsert(99, []Column{txt("1")})); err == nil {
		t.Fatal("insert for an unknown relation must be an error, not a silent skip")
	}
}

func TestDecodeLogicalMessage(t *testing.T) {
	d := newTestDecoder(t)
	content := []byte(`{"id":"e1","aggregatetype":"Order","aggregateid":"o-9","type":"OrderPaid","payload":{"total":3},"headers":{"tenant":"t"}}`)
	r := decodeOK(t, d, buildMessage(Message{Flags: 1, LSN: 5, Prefix: []byte("outbox"), Content: content}))
	ev := r.Event
	if r.Kind != KindEvent || ev.Topic != "outbox.event.Order" || string(ev.Key) != "o-9" || string(ev.Value) != `{"total":3}` || ev.ID != "e1" {
		t.Fatalf("message event: %+v", r)
	}
	// Non-transactional and unknown-prefix messages are not events.
	if r := decodeOK(t, d, buildMessage(Message{Flags: 0, Prefix: []byte("outbox"), Content: content})); r.Kind != KindNone {
		t.Fatalf("non-transactional message relayed: %+v", r)
	}
	if r := decodeOK(t, d, buildMessage(Message{Flags: 1, Prefix: []byte("other"), Content: content})); r.Kind != KindNone {
		t.Fatalf("unknown prefix relayed: %+v", r)
	}
	if _, err := d.Decode(buildMessage(Message{Flags: 1, Prefix: []byte("outbox"), Content: []byte("not json")})); err == nil {
		t.Fatal("malformed envelope must be an error")
	}
}

func BenchmarkDecodeInsert(b *testing.B) {
	d, _ := NewDecoder([]config.Table{config.DefaultTable("public.outbox")}, nil, zerolog.Nop())
	if _, err := d.Decode(outboxRelation(7, "public", "outbox", 3802)); err != nil {
		b.Fatal(err)
	}
	msg := buildInsert(7, []Column{txt("8f1c6a3e-7f0a-4d2b-9a51-3c0f5c2b9e11"), txt("Order"), txt("order-123"), txt("OrderCreated"),
		txt(`{"orderId":"order-123","customer":"c-42","total":129.95,"currency":"EUR","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"padding to ~200 bytes"}`)})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}
