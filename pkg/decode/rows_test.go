package decode

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
)

// A row read with SQL must become the very event the stream makes of the
// same row's insert.
func TestRowMapperMatchesStream(t *testing.T) {
	tbl := withDefaults(config.Table{Table: "public.outbox", Headers: map[string]string{"tenant": ""}, TombstoneOnEmptyPayload: true})
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cols := []RowColumn{
		{Name: "id", TypeOID: oidUUID}, {Name: "aggregatetype", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText},
		{Name: "type", TypeOID: oidText}, {Name: "payload", TypeOID: oidBytea}, {Name: "tenant", TypeOID: oidText},
	}
	d, err := NewDecoder([]config.Table{tbl}, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	m, err := d.RowMapper("public", "outbox", cols)
	if err != nil {
		t.Fatal(err)
	}
	row := [][]byte{[]byte("6c1f0000-0000-0000-0000-000000000001"), []byte("Order"), []byte("42"), []byte("Created"), []byte(`\x7b7d`), nil}
	ev, err := m.Map(row, at)
	if err != nil {
		t.Fatal(err)
	}
	row[2][0] = 'X' // the event must not alias the row's buffers
	if ev.Topic != "outbox.event.Order" || string(ev.Key) != "42" || string(ev.Value) != "{}" || !ev.Timestamp.Equal(at) || ev.Partition != -1 {
		t.Fatalf("event: %+v", ev)
	}
	if len(ev.Headers) != 3 || ev.Headers[0].Key != "id" || ev.Headers[1].Key != "type" || ev.Headers[2].Key != "tenant" || ev.Headers[2].Value != nil {
		t.Fatalf("headers: %+v", ev.Headers)
	}
	ev, err = m.Map([][]byte{[]byte("id2"), []byte("Order"), nil, nil, []byte(`\x`), []byte("acme")}, at)
	if err != nil || ev.Key != nil || ev.Value != nil || len(ev.Headers) != 2 {
		t.Fatalf("NULL key, empty payload tombstone, no type: %+v %v", ev, err)
	}
	if _, err := m.Map([][]byte{nil, []byte("Order"), nil, nil, nil, nil}, at); err == nil {
		t.Fatal("NULL id accepted")
	}
	if _, err := d.RowMapper("public", "other", cols); err == nil {
		t.Fatal("mapper for an unconfigured table")
	}
	if _, err := d.RowMapper("public", "outbox", cols[:3]); err == nil {
		t.Fatal("mapper without the payload column")
	}
}
