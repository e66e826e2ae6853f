package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// wireBuilder writes pgoutput messages for tests.
type wireBuilder struct{ b []byte }

func (w *wireBuilder) u8(v uint8) *wireBuilder {
	w.b = append(w.b, v)
	return w
}

func (w *wireBuilder) u16(v uint16) *wireBuilder {
	w.b = binary.BigEndian.AppendUint16(w.b, v)
	return w
}

func (w *wireBuilder) u32(v uint32) *wireBuilder {
	w.b = binary.BigEndian.AppendUint32(w.b, v)
	return w
}

func (w *wireBuilder) u64(v uint64) *wireBuilder {
	w.b = binary.BigEndian.AppendUint64(w.b, v)
	return w
}

func (w *wireBuilder) raw(p []byte) *wireBuilder {
	w.b = append(w.b, p...)
	return w
}

// str writes a NUL-terminated String.
func (w *wireBuilder) str(s []byte) *wireBuilder {
	w.b = append(append(w.b, s...), 0)
	return w
}

func (w *wireBuilder) tuple(cols []Column) *wireBuilder {
	w.u16(uint16(len(cols)))
	for _, c := range cols {
		w.u8(c.Kind)
		if c.Kind == 't' || c.Kind == 'b' {
			w.u32(uint32(len(c.Data))).raw(c.Data)
		}
	}
	return w
}

func buildBegin(b Begin) []byte {
	w := &wireBuilder{}
	return w.u8('B').u64(b.FinalLSN).u64(uint64(b.CommitTime)).u32(b.Xid).b
}

func buildCommit(c Commit) []byte {
	w := &wireBuilder{}
	return w.u8('C').u8(c.Flags).u64(c.CommitLSN).u64(c.EndLSN).u64(uint64(c.CommitTime)).b
}

func buildOrigin(o Origin) []byte {
	w := &wireBuilder{}
	return w.u8('O').u64(o.LSN).str(o.Name).b
}

func buildRelation(r Relation) []byte {
	w := &wireBuilder{}
	w.u8('R').u32(r.ID).str([]byte(r.Namespace)).str([]byte(r.Name)).u8(r.ReplicaIdentity).u16(uint16(len(r.Columns)))
	for _, c := range r.Columns {
		w.u8(c.Flags).str([]byte(c.Name)).u32(c.TypeOID).u32(uint32(c.TypeMod))
	}
	return w.b
}

func buildTypeDef(oid uint32, ns, name string) []byte {
	w := &wireBuilder{}
	return w.u8('Y').u32(oid).str([]byte(ns)).str([]byte(name)).b
}

func buildInsert(relID uint32, cols []Column) []byte {
	w := &wireBuilder{}
	return w.u8('I').u32(relID).u8('N').tuple(cols).b
}

func buildUpdate(relID uint32, oldKind uint8, old, new []Column) []byte {
	w := &wireBuilder{}
	w.u8('U').u32(relID)
	if oldKind != 0 {
		w.u8(oldKind).tuple(old)
	}
	return w.u8('N').tuple(new).b
}

func buildDelete(relID uint32, kind uint8, old []Column) []byte {
	w := &wireBuilder{}
	return w.u8('D').u32(relID).u8(kind).tuple(old).b
}

func buildTruncate(options uint8, relIDs ...uint32) []byte {
	w := &wireBuilder{}
	w.u8('T').u32(uint32(len(relIDs))).u8(options)
	for _, id := range relIDs {
		w.u32(id)
	}
	return w.b
}

func buildMessage(m Message) []byte {
	w := &wireBuilder{}
	return w.u8('M').u8(m.Flags).u64(m.LSN).str(m.Prefix).u32(uint32(len(m.Content))).raw(m.Content).b
}

func txt(s string) Column { return Column{Kind: 't', Data: []byte(s)} }
func bin(b []byte) Column { return Column{Kind: 'b', Data: b} }

var (
	colNull  = Column{Kind: 'n'}
	colToast = Column{Kind: 'u'}
)

const payloadJSON = `{"orderId":"5f0c3f9e-8a4b-4c1e-9d2a-7b6e5f4d3c2b","customer":{"id":4711,"name":"Ada Lovelace"},"items":[{"sku":"X-1","qty":2},{"sku":"Y-22","qty":1}],"total":"123.45","currency":"EUR"}`

var outboxRow = []Column{
	txt("5f0c3f9e-8a4b-4c1e-9d2a-7b6e5f4d3c2b"),
	txt("order"),
	txt("4711"),
	txt("OrderCreated"),
	txt(payloadJSON),
}

// sampleMessages is one valid message of every kind, with edge cases.
func sampleMessages() map[string][]byte {
	return map[string][]byte{
		"begin":  buildBegin(Begin{FinalLSN: 0x16B3748, CommitTime: 767000000123456, Xid: 742}),
		"commit": buildCommit(Commit{Flags: 0, CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: 767000000123456}),
		"origin": buildOrigin(Origin{LSN: 0xABCDEF, Name: []byte("node_a")}),
		"relation": buildRelation(Relation{ID: 16390, Namespace: "public", Name: "outbox", ReplicaIdentity: 'd', Columns: []RelColumn{
			{Flags: 1, Name: "id", TypeOID: 2950, TypeMod: -1},
			{Name: "aggregatetype", TypeOID: 1043, TypeMod: 259},
			{Name: "payload", TypeOID: 3802, TypeMod: -1},
		}}),
		"relation-nocols": buildRelation(Relation{ID: 1, Namespace: "", Name: "t", ReplicaIdentity: 'n'}),
		"type":            buildTypeDef(16400, "public", "mood"),
		"insert":          buildInsert(16390, outboxRow),
		"insert-kinds":    buildInsert(7, []Column{colNull, colToast, txt(""), bin([]byte{0, 0xff, 0x80}), txt("x")}),
		"insert-empty":    buildInsert(7, nil),
		"update":          buildUpdate(16390, 0, nil, []Column{txt("1"), colToast}),
		"update-key":      buildUpdate(16390, 'K', []Column{txt("1"), colNull}, []Column{txt("2"), txt("b")}),
		"update-old":      buildUpdate(16390, 'O', []Column{txt("1"), txt("a")}, []Column{txt("1"), txt("b")}),
		"delete-key":      buildDelete(16390, 'K', []Column{txt("1"), colNull}),
		"delete-old":      buildDelete(16390, 'O', []Column{txt("1"), txt("a")}),
		"truncate":        buildTruncate(1, 16390, 16391),
		"truncate-none":   buildTruncate(0),
		"message": buildMessage(Message{Flags: 1, LSN: 0x1000, Prefix: []byte("outbox"),
			Content: []byte(`{"id":"e1","aggregatetype":"order","payload":{}}`)}),
		"message-empty": buildMessage(Message{Flags: 0, LSN: 1, Prefix: []byte(""), Content: nil}),
	}
}

func mustParse(t *testing.T, p *Parser, data []byte, want MsgType) {
	t.Helper()
	got, err := p.Parse(data)
	if err != nil {
		t.Fatalf("Parse(%q): %v", data, err)
	}
	if got != want {
		t.Fatalf("Parse(%q) type = %q, want %q", data, got, want)
	}
}

func equalColumns(a, b []Column) bool {
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
	var p Parser
	want := Begin{FinalLSN: 0x0000_0001_16B3_7480, CommitTime: -12345, Xid: 0xFFFF_FFF0}
	mustParse(t, &p, buildBegin(want), MsgBegin)
	if p.Begin != want {
		t.Fatalf("Begin = %+v, want %+v", p.Begin, want)
	}
}

func TestParseCommit(t *testing.T) {
	var p Parser
	want := Commit{Flags: 0, CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: 767000000123456}
	mustParse(t, &p, buildCommit(want), MsgCommit)
	if p.Commit != want {
		t.Fatalf("Commit = %+v, want %+v", p.Commit, want)
	}
}

func TestParseOrigin(t *testing.T) {
	var p Parser
	mustParse(t, &p, buildOrigin(Origin{LSN: 42, Name: []byte("node_a")}), MsgOrigin)
	if p.Origin.LSN != 42 || string(p.Origin.Name) != "node_a" {
		t.Fatalf("Origin = %+v", p.Origin)
	}
}

func TestParseRelation(t *testing.T) {
	var p Parser
	want := Relation{ID: 16390, Namespace: "public", Name: "outbox", ReplicaIdentity: 'f', Columns: []RelColumn{
		{Flags: 1, Name: "id", TypeOID: 2950, TypeMod: -1},
		{Name: "aggregatetype", TypeOID: 1043, TypeMod: 259},
		{Name: "", TypeOID: 17, TypeMod: -1},
	}}
	mustParse(t, &p, buildRelation(want), MsgRelation)
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

	// A later Relation message must not disturb the one a caller kept.
	kept := p.Relation
	mustParse(t, &p, buildRelation(Relation{ID: 1, Namespace: "x", Name: "y", Columns: []RelColumn{{Name: "zzz"}}}), MsgRelation)
	if kept.Columns[0].Name != "id" || kept.Name != "outbox" {
		t.Fatalf("kept relation changed by the next Parse: %+v", kept)
	}
}

func TestParseTypeAndTruncate(t *testing.T) {
	var p Parser
	mustParse(t, &p, buildTypeDef(16400, "public", "mood"), MsgTypeDef)
	mustParse(t, &p, buildTruncate(3, 1, 2, 3), MsgTruncate)
	mustParse(t, &p, buildTruncate(0), MsgTruncate)
}

func TestParseInsert(t *testing.T) {
	var p Parser
	cols := []Column{colNull, colToast, txt(""), bin([]byte{0, 0xff, 0x80}), txt("héllo")}
	in := buildInsert(99, cols)
	mustParse(t, &p, in, MsgInsert)
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
	var p Parser
	newCols := []Column{txt("2"), colToast}
	mustParse(t, &p, buildUpdate(5, 0, nil, newCols), MsgUpdate)
	if p.Update.RelationID != 5 || p.Update.OldKind != 0 || p.Update.Old != nil || !equalColumns(p.Update.New, newCols) {
		t.Fatalf("Update = %+v", p.Update)
	}
	for _, kind := range []uint8{'K', 'O'} {
		old := []Column{txt("1"), colNull, txt("a")}
		mustParse(t, &p, buildUpdate(6, kind, old, newCols), MsgUpdate)
		u := p.Update
		if u.RelationID != 6 || u.OldKind != kind || !equalColumns(u.Old, old) || !equalColumns(u.New, newCols) {
			t.Fatalf("Update(%c) = %+v", kind, u)
		}
	}
	// Back to no old tuple: Old is cleared.
	mustParse(t, &p, buildUpdate(5, 0, nil, newCols), MsgUpdate)
	if p.Update.OldKind != 0 || p.Update.Old != nil {
		t.Fatalf("Old not cleared: %+v", p.Update)
	}
}

func TestParseDelete(t *testing.T) {
	var p Parser
	for _, kind := range []uint8{'K', 'O'} {
		old := []Column{txt("1"), colNull}
		mustParse(t, &p, buildDelete(8, kind, old), MsgDelete)
		if p.Delete.RelationID != 8 || p.Delete.OldKind != kind || !equalColumns(p.Delete.Old, old) {
			t.Fatalf("Delete(%c) = %+v", kind, p.Delete)
		}
	}
}

func TestParseMessage(t *testing.T) {
	var p Parser
	want := Message{Flags: 1, LSN: 0x0000_0002_0000_0010, Prefix: []byte("outbox"), Content: []byte("{\x00binary\xff}")}
	mustParse(t, &p, buildMessage(want), MsgMessage)
	m := p.Message
	if m.Flags != 1 || m.LSN != want.LSN || string(m.Prefix) != "outbox" || !bytes.Equal(m.Content, want.Content) || !m.Transactional() {
		t.Fatalf("Message = %+v, want %+v", m, want)
	}
	mustParse(t, &p, buildMessage(Message{Flags: 0, LSN: 1, Prefix: []byte("p")}), MsgMessage)
	if p.Message.Transactional() || len(p.Message.Content) != 0 {
		t.Fatalf("Message = %+v", p.Message)
	}
}

// Every proper prefix of a valid message, and the message with a byte
// appended, is malformed.
func TestParseTruncatedAndTrailing(t *testing.T) {
	var p Parser
	for name, msg := range sampleMessages() {
		if _, err := p.Parse(msg); err != nil {
			t.Fatalf("%s: valid message rejected: %v", name, err)
		}
		for n := 0; n < len(msg); n++ {
			typ, err := p.Parse(msg[:n:n])
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s truncated to %d/%d bytes: got (%q, %v), want ErrMalformed", name, n, len(msg), typ, err)
			}
		}
		long := append(append([]byte(nil), msg...), 0)
		if _, err := p.Parse(long); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with a trailing byte: got %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	w := func() *wireBuilder { return &wireBuilder{} }
	cases := []struct {
		name, msg string
		data      []byte
	}{
		{"empty", "empty", nil},
		{"unknown type", "unknown message type 0x5a", []byte("Z\x00\x00")},
		{"stream start (v2 only)", "unknown message type 0x53", []byte("S\x00\x00\x00\x01\x01")},
		{"negative column length", "Insert message: new tuple column 0 value at offset 9: negative length -1",
			w().u8('I').u32(1).u8('N').u16(1).u8('t').u32(0xFFFFFFFF).b},
		{"oversized column length", "length 100 exceeds the 3 bytes left",
			w().u8('I').u32(1).u8('N').u16(1).u8('t').u32(100).raw([]byte("abc")).b},
		{"unknown column kind", "unknown kind 0x78",
			w().u8('I').u32(1).u8('N').u16(2).u8('n').u8('x').b},
		{"negative column count", "new tuple column count at offset 6: negative",
			w().u8('I').u32(1).u8('N').u16(0xFFFF).b},
		{"column count past end", "new tuple column count at offset 6: 5 columns cannot fit in 2 bytes",
			w().u8('I').u32(1).u8('N').u16(5).u8('n').u8('n').b},
		{"insert without N", "Insert message: tuple tag at offset 5: got 0x4b",
			w().u8('I').u32(1).u8('K').u16(0).b},
		{"update bad tag", "Update message: tuple tag", w().u8('U').u32(1).u8('X').u16(0).b},
		{"update old then no N", "Update message: tuple tag", w().u8('U').u32(1).u8('K').u16(0).u8('K').u16(0).b},
		{"delete with N", "Delete message: tuple tag", w().u8('D').u32(1).u8('N').u16(0).b},
		{"trailing bytes", "Begin message: message end at offset 21: 2 trailing bytes",
			append(buildBegin(Begin{}), 1, 2)},
		{"message negative content length", "Logical message: content at offset 12: negative length -2",
			w().u8('M').u8(1).u64(1).str([]byte("p")).u32(0xFFFFFFFE).b},
		{"message content too long", "Logical message: content",
			w().u8('M').u8(1).u64(1).str([]byte("p")).u32(10).raw([]byte("short")).b},
		{"prefix without NUL", "Logical message: prefix at offset 10: string not NUL-terminated",
			w().u8('M').u8(1).u64(1).raw([]byte("outbox")).b},
		{"relation negative ncols", "Relation message: column count",
			w().u8('R').u32(1).str([]byte("a")).str([]byte("b")).u8('d').u16(0x8000).b},
		{"relation ncols past end", "cannot fit",
			w().u8('R').u32(1).str([]byte("a")).str([]byte("b")).u8('d').u16(1000).raw(make([]byte, 50)).b},
		{"truncate negative count", "Truncate message: relation count",
			w().u8('T').u32(0x80000000).u8(0).b},
		{"truncate ids past end", "Truncate message: relation ids",
			w().u8('T').u32(3).u8(0).u32(1).b},
	}
	var p Parser
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := p.Parse(c.data)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
		})
	}
}

func TestTupleBuffersReused(t *testing.T) {
	var p Parser
	mustParse(t, &p, buildInsert(1, outboxRow), MsgInsert)
	first := unsafe.SliceData(p.Insert.Tuple)
	mustParse(t, &p, buildInsert(1, outboxRow[:2]), MsgInsert)
	if len(p.Insert.Tuple) != 2 || unsafe.SliceData(p.Insert.Tuple) != first {
		t.Fatal("a narrower tuple did not reuse the column slice")
	}
	mustParse(t, &p, buildInsert(1, outboxRow), MsgInsert)
	if unsafe.SliceData(p.Insert.Tuple) != first {
		t.Fatal("a tuple within capacity did not reuse the column slice")
	}
	wide := append(append([]Column(nil), outboxRow...), outboxRow...)
	mustParse(t, &p, buildInsert(1, wide), MsgInsert)
	if !equalColumns(p.Insert.Tuple, wide) {
		t.Fatal("wider tuple parsed wrong")
	}
	// Update's old tuple buffer survives an Update without one.
	mustParse(t, &p, buildUpdate(1, 'O', outboxRow, outboxRow), MsgUpdate)
	old := unsafe.SliceData(p.Update.Old)
	mustParse(t, &p, buildUpdate(1, 0, nil, outboxRow), MsgUpdate)
	mustParse(t, &p, buildUpdate(1, 'K', outboxRow[:1], outboxRow), MsgUpdate)
	if unsafe.SliceData(p.Update.Old) != old {
		t.Fatal("Update old tuple buffer not reused")
	}
}

func TestParseAllocs(t *testing.T) {
	msgs := sampleMessages()
	for _, name := range []string{"insert", "insert-kinds", "update-old", "delete-key", "begin", "commit", "message", "origin", "truncate", "type"} {
		data := msgs[name]
		var p Parser
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
		got := TimeFromPG(c.us)
		if !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("TimeFromPG(%d) = %v, want %v", c.us, got, c.want)
		}
	}
	// Far beyond what time.Duration can hold: must not overflow.
	if y := TimeFromPG(9_000_000_000_000_000_000).Year(); y < 280000 {
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

func checkColumnsWithin(t *testing.T, what string, cols []Column, data []byte) {
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
	var p Parser
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := append([]byte(nil), data...)
		typ, err := p.Parse(data)
		if !bytes.Equal(orig, data) {
			t.Fatal("Parse modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// Parsing is strict, so a message that parses re-encodes to itself.
		var again []byte
		switch typ {
		case MsgInsert:
			checkColumnsWithin(t, "Insert", p.Insert.Tuple, data)
			again = buildInsert(p.Insert.RelationID, p.Insert.Tuple)
		case MsgUpdate:
			checkColumnsWithin(t, "Update old", p.Update.Old, data)
			checkColumnsWithin(t, "Update new", p.Update.New, data)
			again = buildUpdate(p.Update.RelationID, p.Update.OldKind, p.Update.Old, p.Update.New)
		case MsgDelete:
			checkColumnsWithin(t, "Delete", p.Delete.Old, data)
			again = buildDelete(p.Delete.RelationID, p.Delete.OldKind, p.Delete.Old)
		case MsgBegin:
			again = buildBegin(p.Begin)
		case MsgCommit:
			again = buildCommit(p.Commit)
		case MsgOrigin:
			if !within(p.Origin.Name, data) {
				t.Fatal("Origin name does not lie within the input")
			}
			again = buildOrigin(p.Origin)
		case MsgMessage:
			if !within(p.Message.Prefix, data) || !within(p.Message.Content, data) {
				t.Fatal("Message prefix/content does not lie within the input")
			}
			again = buildMessage(p.Message)
		case MsgRelation:
			again = buildRelation(p.Relation)
		case MsgTypeDef, MsgTruncate:
			again = data
		default:
			t.Fatalf("Parse accepted unknown type %q", typ)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("%q message re-encodes differently:\n in  %q\n out %q", typ, data, again)
		}
	})
}

func BenchmarkParseInsert(b *testing.B) {
	data := buildInsert(16390, outboxRow)
	var p Parser
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := p.Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
