// Package outbox writes outbox events in the caller's own transaction, for
// the relay to publish to Kafka once that transaction commits.
//
// A service changes its business rows and calls Writer.Write (an outbox
// table row) or Emit (a logical decoding message, no table) on the same
// transaction: the event exists if and only if the business change
// committed. Both work with pgx (wrap the pgx.Tx with Pgx) and database/sql
// (wrap the *sql.Tx with SQL).
//
// The default table layout is Debezium's Outbox Event Router's (id uuid,
// aggregatetype, aggregateid, type, payload jsonb), which is also the relay's
// default; Table.Columns takes the same names as the relay's columns.* keys
// for tables laid out otherwise. Event ids default to UUIDv7: time-ordered,
// so the primary key index grows at its right edge instead of taking random
// page splits.
package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/internal/ident"
)

// Execer runs one statement in the caller's transaction. Pgx and SQL adapt
// the two drivers' transactions to it; anything else that can run a
// parameterised statement ($1, $2, ...) can implement it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) error
}

// PgxExecer is what Pgx needs: pgx.Tx, *pgx.Conn, pgxpool's Tx and Pool.
type PgxExecer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SQLExecer is what SQL needs: *sql.Tx, *sql.Conn, *sql.DB.
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Pgx adapts a pgx transaction. Pass the transaction that holds the business
// change: writing through the pool or another connection would commit the
// event on its own.
func Pgx(tx PgxExecer) Execer { return pgxExec{tx} }

// SQL adapts a database/sql transaction; the driver must take $n parameters
// (pgx's stdlib, lib/pq).
func SQL(tx SQLExecer) Execer { return sqlExec{tx} }

type pgxExec struct{ tx PgxExecer }

func (e pgxExec) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := e.tx.Exec(ctx, sql, args...)
	return err
}

type sqlExec struct{ tx SQLExecer }

func (e sqlExec) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := e.tx.ExecContext(ctx, sql, args...)
	return err
}

// Event is one outbox event.
type Event struct {
	// ID is the event id, the record's `id` header, which consumers dedupe
	// on. Zero: a new UUIDv7.
	ID uuid.UUID
	// AggregateType routes the event: topic outbox.event.<AggregateType>
	// with the relay's default topic.
	AggregateType string
	// AggregateID is the record key: events of one aggregate stay in order.
	AggregateID string
	// Type is the `type` header.
	Type string
	// Payload is the record value as JSON text (json.Marshal's output, or a
	// json.RawMessage). nil writes NULL, a null value (tombstone).
	Payload []byte
	// Timestamp fills Table.Columns.Timestamp when that is set; zero leaves
	// the column to its default.
	Timestamp time.Time
	// TraceParent and TraceState are the W3C trace context of the span that
	// wrote the event, written to Table.TraceColumn (for messages, to the
	// traceparent and tracestate headers). The relay's trace_column turns
	// the column into traceparent/tracestate headers.
	TraceParent, TraceState string
	// Extra sets further columns by name, for the relay's headers and
	// partition_column mappings (for messages: further headers, whose
	// values are encoded as JSON).
	Extra map[string]any
}

// Columns names the outbox table's columns, as the relay's columns.* keys do.
type Columns struct {
	ID        string // default "id"
	Key       string // default "aggregateid"
	Payload   string // default "payload"
	RouteBy   string // default "aggregatetype"
	Type      string // default "type"
	Timestamp string // default none: the writer leaves time to the table (created_at DEFAULT now())
}

// Table describes an outbox table.
type Table struct {
	// Name is the table as in the relay's outbox[].table: schema.table,
	// either part in double quotes to keep case. Default "public.outbox".
	Name    string
	Columns Columns
	// TraceColumn receives Event.TraceParent (and TraceState), as the relay's
	// trace_column reads it. Empty: trace context is not written.
	TraceColumn string
}

// Writer inserts events into one outbox table. It holds no connection and is
// safe for concurrent use.
type Writer struct {
	t      Table
	ident  string // quoted table name
	cols   []string
	insert string // the statement without Extra columns
	now    func() time.Time
}

// New returns a writer for t after filling its defaults and checking its
// names.
func New(t Table) (*Writer, error) {
	t = t.withDefaults()
	ident, err := quoteTable(t.Name)
	if err != nil {
		return nil, err
	}
	w := &Writer{t: t, ident: ident, now: time.Now}
	w.cols = []string{t.Columns.ID, t.Columns.RouteBy, t.Columns.Key, t.Columns.Type, t.Columns.Payload}
	for _, c := range w.cols {
		if c == "" {
			return nil, errors.New("outbox: every column of Table.Columns but Timestamp must be named")
		}
	}
	if hasDup(w.cols, t.Columns.Timestamp, t.TraceColumn) {
		return nil, fmt.Errorf("outbox: table %s maps two parts of an event to one column", t.Name)
	}
	w.insert = w.statement(nil)
	return w, nil
}

func hasDup(cols []string, more ...string) bool {
	all := slices.Clone(cols)
	for _, m := range more {
		if m != "" {
			all = append(all, m)
		}
	}
	slices.Sort(all)
	return len(slices.Compact(all)) != len(all)
}

func (t Table) withDefaults() Table {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&t.Name, "public.outbox")
	def(&t.Columns.ID, "id")
	def(&t.Columns.Key, "aggregateid")
	def(&t.Columns.Payload, "payload")
	def(&t.Columns.RouteBy, "aggregatetype")
	def(&t.Columns.Type, "type")
	return t
}

// statement builds the INSERT for the fixed columns plus extra (sorted).
func (w *Writer) statement(extra []string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(w.ident)
	b.WriteString(" (")
	n := 0
	add := func(col string) {
		if n > 0 {
			b.WriteString(", ")
		}
		n++
		b.WriteString(pgx.Identifier{col}.Sanitize())
	}
	for _, c := range w.cols {
		add(c)
	}
	if w.t.Columns.Timestamp != "" {
		add(w.t.Columns.Timestamp)
	}
	if w.t.TraceColumn != "" {
		add(w.t.TraceColumn)
	}
	for _, c := range extra {
		add(c)
	}
	b.WriteString(") VALUES (")
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		// The timestamp is bound as NULL when unset, so COALESCE keeps the
		// column's own default semantics without a second statement shape.
		if w.t.Columns.Timestamp != "" && i == len(w.cols)+1 {
			fmt.Fprintf(&b, "COALESCE($%d::timestamptz, now())", i)
			continue
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	b.WriteString(")")
	return b.String()
}

// Write inserts ev through tx and returns its id. It does not commit: the
// event is published only if the caller's transaction commits.
func (w *Writer) Write(ctx context.Context, tx Execer, ev Event) (uuid.UUID, error) {
	id, err := eventID(ev.ID)
	if err != nil {
		return uuid.Nil, err
	}
	args := make([]any, 0, len(w.cols)+2+len(ev.Extra))
	args = append(args, id.String(), ev.AggregateType, ev.AggregateID, ev.Type, payloadArg(ev.Payload))
	if w.t.Columns.Timestamp != "" {
		var ts any
		if !ev.Timestamp.IsZero() {
			ts = ev.Timestamp
		}
		args = append(args, ts)
	}
	if w.t.TraceColumn != "" {
		args = append(args, traceArg(ev.TraceParent, ev.TraceState))
	}
	stmt := w.insert
	if len(ev.Extra) > 0 {
		names := make([]string, 0, len(ev.Extra))
		for k := range ev.Extra {
			names = append(names, k)
		}
		slices.Sort(names)
		if hasDup(w.cols, append(names, w.t.Columns.Timestamp, w.t.TraceColumn)...) {
			return uuid.Nil, fmt.Errorf("outbox: event %s: Extra names a column the writer already fills", id)
		}
		for _, k := range names {
			args = append(args, ev.Extra[k])
		}
		stmt = w.statement(names)
	}
	if err := tx.Exec(ctx, stmt, args...); err != nil {
		return uuid.Nil, fmt.Errorf("outbox: writing event %s (%s) to %s: %w", id, ev.Type, w.t.Name, err)
	}
	return id, nil
}

func eventID(id uuid.UUID) (uuid.UUID, error) {
	if id != uuid.Nil {
		return id, nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.Nil, fmt.Errorf("outbox: generating an event id: %w", err)
	}
	return id, nil
}

// payloadArg binds the payload as text so that jsonb, json and text columns
// all accept it through either driver (a []byte would be sent as bytea by
// some database/sql drivers).
func payloadArg(p []byte) any {
	if p == nil {
		return nil
	}
	return string(p)
}

// traceArg is a bare traceparent, or, with a tracestate, the Java properties
// text Debezium's tracingspancontext column holds, which the relay reads too.
func traceArg(parent, state string) any {
	switch {
	case parent == "":
		return nil
	case state == "":
		return parent
	}
	return "traceparent=" + parent + "\ntracestate=" + state + "\n"
}

// quoteTable parses schema.table as the relay's config does (parts
// optionally double-quoted, unquoted parts folded to lower case) and quotes it.
func quoteTable(name string) (string, error) {
	schema, table, err := ident.Table(name)
	if err != nil {
		return "", fmt.Errorf("outbox: table: %w", err)
	}
	return pgx.Identifier{schema, table}.Sanitize(), nil
}
