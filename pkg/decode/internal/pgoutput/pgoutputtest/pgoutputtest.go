// Package pgoutputtest encodes pgoutput messages for tests: the parser's own
// tests, which check that whatever parses re-encodes to the same bytes, and
// the decoder's, which feed it relations, inserts and logical messages
// without a Postgres server. Only tests import it.
package pgoutputtest

import (
	"encoding/binary"

	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput"
)

// Wire appends pgoutput wire fields to B, for messages the typed builders
// cannot express (malformed ones).
type Wire struct{ B []byte }

// U8 appends a byte.
func (w *Wire) U8(v uint8) *Wire {
	w.B = append(w.B, v)
	return w
}

// U16 appends a big-endian Int16.
func (w *Wire) U16(v uint16) *Wire {
	w.B = binary.BigEndian.AppendUint16(w.B, v)
	return w
}

// U32 appends a big-endian Int32.
func (w *Wire) U32(v uint32) *Wire {
	w.B = binary.BigEndian.AppendUint32(w.B, v)
	return w
}

// U64 appends a big-endian Int64.
func (w *Wire) U64(v uint64) *Wire {
	w.B = binary.BigEndian.AppendUint64(w.B, v)
	return w
}

// Raw appends p as it is.
func (w *Wire) Raw(p []byte) *Wire {
	w.B = append(w.B, p...)
	return w
}

// Str appends a NUL-terminated String.
func (w *Wire) Str(s []byte) *Wire {
	w.B = append(append(w.B, s...), 0)
	return w
}

// Tuple appends a TupleData.
func (w *Wire) Tuple(cols []pgoutput.Column) *Wire {
	w.U16(uint16(len(cols)))
	for _, c := range cols {
		w.U8(c.Kind)
		if c.Kind == 't' || c.Kind == 'b' {
			w.U32(uint32(len(c.Data))).Raw(c.Data)
		}
	}
	return w
}

// Begin encodes a Begin message.
func Begin(b pgoutput.Begin) []byte {
	w := &Wire{}
	return w.U8('B').U64(uint64(b.FinalLSN)).U64(uint64(b.CommitTime)).U32(b.Xid).B
}

// Commit encodes a Commit message.
func Commit(c pgoutput.Commit) []byte {
	w := &Wire{}
	return w.U8('C').U8(c.Flags).U64(uint64(c.CommitLSN)).U64(uint64(c.EndLSN)).U64(uint64(c.CommitTime)).B
}

// Origin encodes an Origin message.
func Origin(o pgoutput.Origin) []byte {
	w := &Wire{}
	return w.U8('O').U64(uint64(o.LSN)).Str(o.Name).B
}

// Relation encodes a Relation message.
func Relation(r pgoutput.Relation) []byte {
	w := &Wire{}
	w.U8('R').U32(r.ID).Str([]byte(r.Namespace)).Str([]byte(r.Name)).U8(r.ReplicaIdentity).U16(uint16(len(r.Columns)))
	for _, c := range r.Columns {
		w.U8(c.Flags).Str([]byte(c.Name)).U32(c.TypeOID).U32(uint32(c.TypeMod))
	}
	return w.B
}

// TypeDef encodes a Type message.
func TypeDef(oid uint32, ns, name string) []byte {
	w := &Wire{}
	return w.U8('Y').U32(oid).Str([]byte(ns)).Str([]byte(name)).B
}

// Insert encodes an Insert message.
func Insert(relID uint32, cols []pgoutput.Column) []byte {
	w := &Wire{}
	return w.U8('I').U32(relID).U8('N').Tuple(cols).B
}

// Update encodes an Update message; oldKind 0 sends no old tuple.
func Update(relID uint32, oldKind uint8, old, new []pgoutput.Column) []byte {
	w := &Wire{}
	w.U8('U').U32(relID)
	if oldKind != 0 {
		w.U8(oldKind).Tuple(old)
	}
	return w.U8('N').Tuple(new).B
}

// Delete encodes a Delete message.
func Delete(relID uint32, kind uint8, old []pgoutput.Column) []byte {
	w := &Wire{}
	return w.U8('D').U32(relID).U8(kind).Tuple(old).B
}

// Truncate encodes a Truncate message.
func Truncate(options uint8, relIDs ...uint32) []byte {
	w := &Wire{}
	w.U8('T').U32(uint32(len(relIDs))).U8(options)
	for _, id := range relIDs {
		w.U32(id)
	}
	return w.B
}

// Message encodes a logical decoding message.
func Message(m pgoutput.Message) []byte {
	w := &Wire{}
	return w.U8('M').U8(m.Flags).U64(uint64(m.LSN)).Str(m.Prefix).U32(uint32(len(m.Content))).Raw(m.Content).B
}

// Text is a text-format tuple value.
func Text(s string) pgoutput.Column { return pgoutput.Column{Kind: 't', Data: []byte(s)} }

// Binary is a binary-format tuple value.
func Binary(b []byte) pgoutput.Column { return pgoutput.Column{Kind: 'b', Data: b} }

// Tuple values without data.
var (
	Null  = pgoutput.Column{Kind: 'n'}
	Toast = pgoutput.Column{Kind: 'u'} // unchanged TOAST value
)
