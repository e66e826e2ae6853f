package pgoutput_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput/pgoutputtest"
)

const payloadJSON = `{"orderId":"5f0c3f9e-8a4b-4c1e-9d2a-7b6e5f4d3c2b","customer":{"id":4711,"name":"Ada Lovelace"},"items":[{"sku":"X-1","qty":2},{"sku":"Y-22","qty":1}],"total":"123.45","currency":"EUR"}`

var outboxRow = []pgoutput.Column{
	pgoutputtest.Text("5f0c3f9e-8a4b-4c1e-9d2a-7b6e5f4d3c2b"),
	pgoutputtest.Text("order"),
	pgoutputtest.Text("4711"),
	pgoutputtest.Text("OrderCreated"),
	pgoutputtest.Text(payloadJSON),
}

// sampleMessages is one valid message of every kind, with edge cases.
func sampleMessages() map[string][]byte {
	return map[string][]byte{
		"begin":  pgoutputtest.Begin(pgoutput.Begin{FinalLSN: 0x16B3748, CommitTime: 767000000123456, Xid: 742}),
		"commit": pgoutputtest.Commit(pgoutput.Commit{Flags: 0, CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: 767000000123456}),
		"origin": pgoutputtest.Origin(pgoutput.Origin{LSN: 0xABCDEF, Name: []byte("node_a")}),
		"relation": pgoutputtest.Relation(pgoutput.Relation{ID: 16390, Namespace: "public", Name: "outbox", ReplicaIdentity: 'd', Columns: []pgoutput.RelColumn{
			{Flags: 1, Name: "id", TypeOID: 2950, TypeMod: -1},
			{Name: "aggregatetype", TypeOID: 1043, TypeMod: 259},
			{Name: "payload", TypeOID: 3802, TypeMod: -1},
		}}),
		"relation-nocols": pgoutputtest.Relation(pgoutput.Relation{ID: 1, Namespace: "", Name: "t", ReplicaIdentity: 'n'}),
		"type":            pgoutputtest.TypeDef(16400, "public", "mood"),
		"insert":          pgoutputtest.Insert(16390, outboxRow),
		"insert-kinds":    pgoutputtest.Insert(7, []pgoutput.Column{pgoutputtest.Null, pgoutputtest.Toast, pgoutputtest.Text(""), pgoutputtest.Binary([]byte{0, 0xff, 0x80}), pgoutputtest.Text("x")}),
		"insert-empty":    pgoutputtest.Insert(7, nil),
		"update":          pgoutputtest.Update(16390, 0, nil, []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Toast}),
		"update-key":      pgoutputtest.Update(16390, 'K', []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Null}, []pgoutput.Column{pgoutputtest.Text("2"), pgoutputtest.Text("b")}),
		"update-old":      pgoutputtest.Update(16390, 'O', []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Text("a")}, []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Text("b")}),
		"delete-key":      pgoutputtest.Delete(16390, 'K', []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Null}),
		"delete-old":      pgoutputtest.Delete(16390, 'O', []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Text("a")}),
		"truncate":        pgoutputtest.Truncate(1, 16390, 16391),
		"truncate-none":   pgoutputtest.Truncate(0),
		"message": pgoutputtest.Message(pgoutput.Message{Flags: 1, LSN: 0x1000, Prefix: []byte("outbox"),
			Content: []byte(`{"id":"e1","aggregatetype":"order","payload":{}}`)}),
		"message-empty": pgoutputtest.Message(pgoutput.Message{Flags: 0, LSN: 1, Prefix: []byte(""), Content: nil}),
	}
}

func mustParse(t *testing.T, p *pgoutput.Parser, data []byte, want pgoutput.MsgType) {
	t.Helper()
	got, err := p.Parse(data)
	if err != nil {
		t.Fatalf("Parse(%q): %v", data, err)
	}
	if got != want {
		t.Fatalf("Parse(%q) type = %q, want %q", data, got, want)
	}
}

func equalColumns(a, b []pgoutput.Column) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func TestParseBegin(t *testing.T) {
	var p pgoutput.Parser
	want := pgoutput.Begin{FinalLSN: 0x0000_0001_16B3_7480, CommitTime: -12345, Xid: 0xFFFF_FFF0}
	mustParse(t, &p, pgoutputtest.Begin(want), pgoutput.MsgBegin)
	if p.Begin != want {
		t.Fatalf("Begin = %+v, want %+v", p.Begin, want)
	}
}

func TestParseCommit(t *testing.T) {
	var p pgoutput.Parser
	want := pgoutput.Commit{Flags: 0, CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: 767000000123456}
	mustParse(t, &p, pgoutputtest.Commit(want), pgoutput.MsgCommit)
	if p.Commit != want {
		t.Fatalf("Commit = %+v, want %+v", p.Commit, want)
	}
}

func TestParseOrigin(t *testing.T) {
	var p pgoutput.Parser
	mustParse(t, &p, pgoutputtest.Origin(pgoutput.Origin{LSN: 42, Name: []byte("node_a")}), pgoutput.MsgOrigin)
	if p.Origin.LSN != 42 || string(p.Origin.Name) != "node_a" {
		t.Fatalf("Origin = %+v", p.Origin)
	}
}

func TestParseRelation(t *testing.T) {
	var p pgoutput.Parser
	want := pgoutput.Relation{ID: 16390, Namespace: "public", Name: "outbox", ReplicaIdentity: 'f', Columns: []pgoutput.RelColumn{
		{Flags: 1, Name: "id", TypeOID: 2950, TypeMod: -1},
		{Name: "aggregatetype", TypeOID: 1043, TypeMod: 259},
		{Name: "", TypeOID: 17, TypeMod: -1},
	}}
	mustParse(t, &p, pgoutputtest.Relation(want), pgoutput.MsgRelation)
	got := p.Relation
	if got.ID != want.ID || got.Namespace != want.Namespace || got.Name != want.Name || got.ReplicaIdentity != want.ReplicaIdentity {
		t.Fatalf("Relation = %+v, want %+v", got, want)
	}
	if len(got.Columns) != len(want.Columns) {
		t.Fatalf("Columns = %+v, want %+v", got.Columns, want.Columns)
	}
	for i := range want.Columns {
		if got.Columns[i] != want.Columns[i] {
			t.Errorf("column %d = %+v, want %+v", i, got.Columns[i], want.Columns[i])
		}
	}

	// A later pgoutput.Relation message must not disturb the one a caller kept.
	kept := p.Relation
	mustParse(t, &p, pgoutputtest.Relation(pgoutput.Relation{ID: 1, Namespace: "x", Name: "y", Columns: []pgoutput.RelColumn{{Name: "zzz"}}}), pgoutput.MsgRelation)
	if kept.Columns[0].Name != "id" || kept.Name != "outbox" {
		t.Fatalf("kept relation changed by the next Parse: %+v", kept)
	}
}

func TestParseTypeAndTruncate(t *testing.T) {
	var p pgoutput.Parser
	mustParse(t, &p, pgoutputtest.TypeDef(16400, "public", "mood"), pgoutput.MsgTypeDef)
	mustParse(t, &p, pgoutputtest.Truncate(3, 1, 2, 3), pgoutput.MsgTruncate)
	mustParse(t, &p, pgoutputtest.Truncate(0), pgoutput.MsgTruncate)
}

func TestParseInsert(t *testing.T) {
	var p pgoutput.Parser
	cols := []pgoutput.Column{pgoutputtest.Null, pgoutputtest.Toast, pgoutputtest.Text(""), pgoutputtest.Binary([]byte{0, 0xff, 0x80}), pgoutputtest.Text("héllo")}
	in := pgoutputtest.Insert(99, cols)
	mustParse(t, &p, in, pgoutput.MsgInsert)
	if p.Insert.RelationID != 99 || !equalColumns(p.Insert.Tuple, cols) {
		t.Fatalf("Insert = %+v, want rel 99 %+v", p.Insert, cols)
	}
	if p.Insert.Tuple[0].Data != nil || p.Insert.Tuple[1].Data != nil {
		t.Fatal("null and unchanged-TOAST columns must have nil Data")
	}
	for i, c := range p.Insert.Tuple {
		if cap(c.Data) != len(c.Data) {
			t.Errorf("column %d: cap %d > len %d: appending would clobber the input", i, cap(c.Data), len(c.Data))
		}
	}
	// Data aliases the input.
	in[len(in)-1] = 'X'
	if got := string(p.Insert.Tuple[4].Data); got != "héllX" {
		t.Fatalf("Data does not alias the input: %q", got)
	}
}

func TestParseUpdate(t *testing.T) {
	var p pgoutput.Parser
	newCols := []pgoutput.Column{pgoutputtest.Text("2"), pgoutputtest.Toast}
	mustParse(t, &p, pgoutputtest.Update(5, 0, nil, newCols), pgoutput.MsgUpdate)
	if p.Update.RelationID != 5 || p.Update.OldKind != 0 || p.Update.Old != nil || !equalColumns(p.Update.New, newCols) {
		t.Fatalf("Update = %+v", p.Update)
	}
	for _, kind := range []uint8{'K', 'O'} {
		old := []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Null, pgoutputtest.Text("a")}
		mustParse(t, &p, pgoutputtest.Update(6, kind, old, newCols), pgoutput.MsgUpdate)
		u := p.Update
		if u.RelationID != 6 || u.OldKind != kind || !equalColumns(u.Old, old) || !equalColumns(u.New, newCols) {
			t.Fatalf("Update(%c) = %+v", kind, u)
		}
	}
	// Back to no old tuple: Old is cleared.
	mustParse(t, &p, pgoutputtest.Update(5, 0, nil, newCols), pgoutput.MsgUpdate)
	if p.Update.OldKind != 0 || p.Update.Old != nil {
		t.Fatalf("Old not cleared: %+v", p.Update)
	}
}

func TestParseDelete(t *testing.T) {
	var p pgoutput.Parser
	for _, kind := range []uint8{'K', 'O'} {
		old := []pgoutput.Column{pgoutputtest.Text("1"), pgoutputtest.Null}
		mustParse(t, &p, pgoutputtest.Delete(8, kind, old), pgoutput.MsgDelete)
		if p.Delete.RelationID != 8 || p.Delete.OldKind != kind || !equalColumns(p.Delete.Old, old) {
			t.Fatalf("Delete(%c) = %+v", kind, p.Delete)
		}
	}
}

func TestParseMessage(t *testing.T) {
	var p pgoutput.Parser
	want := pgoutput.Message{Flags: 1, LSN: 0x0000_0002_0000_0010, Prefix: []byte("outbox"), Content: []byte("{\x00binary\xff}")}
	mustParse(t, &p, pgoutputtest.Message(want), pgoutput.MsgMessage)
	m := p.Message
	if m.Flags != 1 || m.LSN != want.LSN || string(m.Prefix) != "outbox" || !bytes.Equal(m.Content, want.Content) || !m.Transactional() {
		t.Fatalf("Message = %+v, want %+v", m, want)
	}
	mustParse(t, &p, pgoutputtest.Message(pgoutput.Message{Flags: 0, LSN: 1, Prefix: []byte("p")}), pgoutput.MsgMessage)
	if p.Message.Transactional() || len(p.Message.Content) != 0 {
		t.Fatalf("Message = %+v", p.Message)
	}
}

// Every proper prefix of a valid message, and the message with a byte
// appended, is malformed.
func TestParseTruncatedAndTrailing(t *testing.T) {
	var p pgoutput.Parser
	for name, msg := range sampleMessages() {
		if _, err := p.Parse(msg); err != nil {
			t.Fatalf("%s: valid message rejected: %v", name, err)
		}
		for n := 0; n < len(msg); n++ {
			typ, err := p.Parse(msg[:n:n])
			if !errors.Is(err, pgoutput.ErrMalformed) {
				t.Errorf("%s truncated to %d/%d bytes: got (%q, %v), want ErrMalformed", name, n, len(msg), typ, err)
			}
		}
		long := append(append([]byte(nil), msg...), 0)
		if _, err := p.Parse(long); !errors.Is(err, pgoutput.ErrMalformed) {
			t.Errorf("%s with a trailing byte: got %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	w := func() *pgoutputtest.Wire { return &pgoutputtest.Wire{} }
	cases := []struct {
		name, msg string
		data      []byte
	}{
		{"empty", "empty", nil},
		{"unknown type", "unknown message type 0x5a", []byte("Z\x00\x00")},
		{"stream start (v2 only)", "unknown message type 0x53", []byte("S\x00\x00\x00\x01\x01")},
		{"negative column length", "Insert message: new tuple column 0 value at offset 9: negative length -1",
			w().U8('I').U32(1).U8('N').U16(1).U8('t').U32(0xFFFFFFFF).B},
		{"oversized column length", "length 100 exceeds the 3 bytes left",
			w().U8('I').U32(1).U8('N').U16(1).U8('t').U32(100).Raw([]byte("abc")).B},
		{"unknown column kind", "unknown kind 0x78",
			w().U8('I').U32(1).U8('N').U16(2).U8('n').U8('x').B},
		{"negative column count", "new tuple column count at offset 6: negative",
			w().U8('I').U32(1).U8('N').U16(0xFFFF).B},
		{"column count past end", "new tuple column count at offset 6: 5 columns cannot fit in 2 bytes",
			w().U8('I').U32(1).U8('N').U16(5).U8('n').U8('n').B},
		{"insert without N", "Insert message: tuple tag at offset 5: got 0x4b",
			w().U8('I').U32(1).U8('K').U16(0).B},
		{"update bad tag", "Update message: tuple tag", w().U8('U').U32(1).U8('X').U16(0).B},
		{"update old then no N", "Update message: tuple tag", w().U8('U').U32(1).U8('K').U16(0).U8('K').U16(0).B},
		{"delete with N", "Delete message: tuple tag", w().U8('D').U32(1).U8('N').U16(0).B},
		{"trailing bytes", "Begin message: message end at offset 21: 2 trailing bytes",
			append(pgoutputtest.Begin(pgoutput.Begin{}), 1, 2)},
		{"message negative content length", "Logical message: content at offset 12: negative length -2",
			w().U8('M').U8(1).U64(1).Str([]byte("p")).U32(0xFFFFFFFE).B},
		{"message content too long", "Logical message: content",
			w().U8('M').U8(1).U64(1).Str([]byte("p")).U32(10).Raw([]byte("short")).B},
		{"prefix without NUL", "Logical message: prefix at offset 10: string not NUL-terminated",
			w().U8('M').U8(1).U64(1).Raw([]byte("outbox")).B},
		{"relation negative ncols", "Relation message: column count",
			w().U8('R').U32(1).Str([]byte("a")).Str([]byte("b")).U8('d').U16(0x8000).B},
		{"relation ncols past end", "cannot fit",
			w().U8('R').U32(1).Str([]byte("a")).Str([]byte("b")).U8('d').U16(1000).Raw(make([]byte, 50)).B},
		{"truncate negative count", "Truncate message: relation count",
			w().U8('T').U32(0x80000000).U8(0).B},
		{"truncate ids past end", "Truncate message: relation ids",
			w().U8('T').U32(3).U8(0).U32(1).B},
	}
	var p pgoutput.Parser
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := p.Parse(c.data)
			if !errors.Is(err, pgoutput.ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
		})
	}
}

func TestTupleBuffersReused(t *testing.T) {
	var p pgoutput.Parser
	mustParse(t, &p, pgoutputtest.Insert(1, outboxRow), pgoutput.MsgInsert)
	first := unsafe.SliceData(p.Insert.Tuple)
	mustParse(t, &p, pgoutputtest.Insert(1, outboxRow[:2]), pgoutput.MsgInsert)
	if len(p.Insert.Tuple) != 2 || unsafe.SliceData(p.Insert.Tuple) != first {
		t.Fatal("a narrower tuple did not reuse the column slice")
	}
	mustParse(t, &p, pgoutputtest.Insert(1, outboxRow), pgoutput.MsgInsert)
	if unsafe.SliceData(p.Insert.Tuple) != first {
		t.Fatal("a tuple within capacity did not reuse the column slice")
	}
	wide := append(append([]pgoutput.Column(nil), outboxRow...), outboxRow...)
	mustParse(t, &p, pgoutputtest.Insert(1, wide), pgoutput.MsgInsert)
	if !equalColumns(p.Insert.Tuple, wide) {
		t.Fatal("wider tuple parsed wrong")
	}
	// Update's old tuple buffer survives an Update without one.
	mustParse(t, &p, pgoutputtest.Update(1, 'O', outboxRow, outboxRow), pgoutput.MsgUpdate)
	old := unsafe.SliceData(p.Update.Old)
	mustParse(t, &p, pgoutputtest.Update(1, 0, nil, outboxRow), pgoutput.MsgUpdate)
	mustParse(t, &p, pgoutputtest.Update(1, 'K', outboxRow[:1], outboxRow), pgoutput.MsgUpdate)
	if unsafe.SliceData(p.Update.Old) != old {
		t.Fatal("Update old tuple buffer not reused")
	}
}

func TestParseAllocs(t *testing.T) {
	msgs := sampleMessages()
	for _, name := range []string{"insert", "insert-kinds", "update-old", "delete-key", "begin", "commit", "message", "origin", "truncate", "type"} {
		data := msgs[name]
		var p pgoutput.Parser
		if _, err := p.Parse(data); err != nil { // warm up: size the buffers
			t.Fatalf("%s: %v", name, err)
		}
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := p.Parse(data); err != nil {
				panic(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per Parse, want 0", name, allocs)
		}
	}
}

func TestTimeFromPG(t *testing.T) {
	cases := []struct {
		us   int64
		want time.Time
	}{
		{0, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{1, time.Date(2000, 1, 1, 0, 0, 0, 1000, time.UTC)},
		{-1, time.Date(1999, 12, 31, 23, 59, 59, 999_999_000, time.UTC)},
		{-1_500_000, time.Date(1999, 12, 31, 23, 59, 58, 500_000_000, time.UTC)},
		// 2024-04-21 08:06:40.123456 UTC (date -u -d @1713686800)
		{767_002_000_123_456, time.Date(2024, 4, 21, 8, 6, 40, 123_456_000, time.UTC)},
	}
	for _, c := range cases {
		got := pgoutput.TimeFromPG(c.us)
		if !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("TimeFromPG(%d) = %v, want %v", c.us, got, c.want)
		}
	}
	// Far beyond what time.Duration can hold: must not overflow.
	if y := pgoutput.TimeFromPG(9_000_000_000_000_000_000).Year(); y < 280000 {
		t.Errorf("TimeFromPG(9e18).Year() = %d, want far future", y)
	}
}

// within reports whether sub lies inside buf's memory.
func within(sub, buf []byte) bool {
	if len(sub) == 0 {
		return true
	}
	if len(buf) == 0 {
		return false
	}
	s := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	b := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return s >= b && s+uintptr(len(sub)) <= b+uintptr(len(buf))
}

func checkColumnsWithin(t *testing.T, what string, cols []pgoutput.Column, data []byte) {
	for i, c := range cols {
		if !within(c.Data, data) {
			t.Fatalf("%s column %d Data does not lie within the input", what, i)
		}
		switch c.Kind {
		case 'n', 'u':
			if c.Data != nil {
				t.Fatalf("%s column %d kind %q has Data", what, i, c.Kind)
			}
		case 't', 'b':
		default:
			t.Fatalf("%s column %d has kind 0x%02x", what, i, c.Kind)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m)
	}
	var p pgoutput.Parser
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := append([]byte(nil), data...)
		typ, err := p.Parse(data)
		if !bytes.Equal(orig, data) {
			t.Fatal("Parse modified its input")
		}
		if err != nil {
			if !errors.Is(err, pgoutput.ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// Parsing is strict, so a message that parses re-encodes to itself.
		var again []byte
		switch typ {
		case pgoutput.MsgInsert:
			checkColumnsWithin(t, "Insert", p.Insert.Tuple, data)
			again = pgoutputtest.Insert(p.Insert.RelationID, p.Insert.Tuple)
		case pgoutput.MsgUpdate:
			checkColumnsWithin(t, "Update old", p.Update.Old, data)
			checkColumnsWithin(t, "Update new", p.Update.New, data)
			again = pgoutputtest.Update(p.Update.RelationID, p.Update.OldKind, p.Update.Old, p.Update.New)
		case pgoutput.MsgDelete:
			checkColumnsWithin(t, "Delete", p.Delete.Old, data)
			again = pgoutputtest.Delete(p.Delete.RelationID, p.Delete.OldKind, p.Delete.Old)
		case pgoutput.MsgBegin:
			again = pgoutputtest.Begin(p.Begin)
		case pgoutput.MsgCommit:
			again = pgoutputtest.Commit(p.Commit)
		case pgoutput.MsgOrigin:
			if !within(p.Origin.Name, data) {
				t.Fatal("Origin name does not lie within the input")
			}
			again = pgoutputtest.Origin(p.Origin)
		case pgoutput.MsgMessage:
			if !within(p.Message.Prefix, data) || !within(p.Message.Content, data) {
				t.Fatal("Message prefix/content does not lie within the input")
			}
			again = pgoutputtest.Message(p.Message)
		case pgoutput.MsgRelation:
			again = pgoutputtest.Relation(p.Relation)
		case pgoutput.MsgTypeDef, pgoutput.MsgTruncate:
			again = data
		default:
			t.Fatalf("Parse accepted unknown type %q", typ)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("%q message re-encodes differently:\n in  %q\n out %q", typ, data, again)
		}
	})
}
