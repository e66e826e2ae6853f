package decode

import (
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput"
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Event is one record to publish. Its byte slices are owned by the event (they
// do not alias the replication buffer).
type Event struct {
	Table     string // configured outbox table, or "message:<prefix>" for logical messages
	Topic     string
	Key       []byte // nil when the key column is NULL
	Value     []byte // nil for a tombstone
	ID        string
	Headers   []Header
	Timestamp time.Time
	Partition int32  // -1: let the partitioner choose
	Seq       uint64 // assigned by the checkpoint tracker when the event is handed over
	// Txn is the commit LSN its transaction's Begin announced and TxnIndex
	// its place among that transaction's events, set by the stream: with
	// exactly-once delivery a progress record can point inside a transaction.
	Txn      pglogrepl.LSN
	TxnIndex int

	hdrs [2]Header // storage for the id and type headers, saving an allocation
}

// Size is the event's approximate memory footprint, used for the in-flight cap.
//
// It counts what the event costs while in flight, not just its bytes: the
// event and sarama's message structs (~1 KB measured with VmHWM across a
// 200k-event drain), and key, value and headers twice, once as decoded and
// once encoded into the producer's batch. Counting only the payload let a full
// 16 MB cap hold ~100 MB of heap.
func (e *Event) Size() int {
	const fixed = 1024
	n := len(e.Key) + len(e.Value) + len(e.ID)
	for _, h := range e.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return fixed + len(e.Topic) + 2*n
}

// Kind says what a decoded message means to the caller.
type Kind int

const (
	// KindNone needs no action (relation metadata, ignored operations, ...).
	KindNone Kind = iota
	// KindBegin starts a transaction; Result.LSN is its commit LSN.
	KindBegin
	// KindEvent carries Result.Event.
	KindEvent
	// KindCommit ends a transaction; Result.LSN is the end of its commit record,
	// the position to confirm once its events are acked.
	KindCommit
)

// Result is the outcome of decoding one message.
type Result struct {
	Kind       Kind
	LSN        pglogrepl.LSN
	CommitTime time.Time
	Event      *Event
}

// Decoder maps pgoutput messages to events. It is not safe for concurrent use:
// one replication stream owns one Decoder.
type Decoder struct {
	p        pgoutput.Parser
	log      zerolog.Logger
	tables   map[string]*rule // by "schema.table"
	rels     map[uint32]*relation
	messages map[string]*router // by prefix
	msgFmt   map[string]*eventFormat
	commitAt time.Time
	// ancestors, when set, names the partition ancestors of a relation
	// that is not a configured table.
	ancestors func(schema, name string) ([]string, error)

	traceWarned map[string]bool // tables whose invalid trace context was logged at warn
}

type rule struct {
	cfg    config.Table
	schema string
	name   string
	route  *router
	format eventFormat
}

type relation struct {
	name  string
	rule  *rule // nil: not an outbox table, rows ignored
	id    int
	key   int
	pay   int
	payBy bool // payload column is bytea
	route int
	typ   int
	ts    int // -1: commit time
	part  int // -1: partitioner
	hdrs  []hdrCol
	trace int    // -1: no trace_column
	ct    []byte // content-type of the payload column, for CloudEvents
}

type hdrCol struct {
	idx  int
	name string
}

// router builds topic names from the route-by value the way Debezium's Outbox
// Event Router does (route.topic.regex + route.topic.replacement, applied by
// Kafka Connect's RegexRouter), caching them so the hot path does not allocate
// a topic string per event.
type router struct {
	prefix, suffix string // the template around ${routedByValue}
	placeholder    bool   // false: the template is the whole topic
	re             *regexp.Regexp
	group          int
	cache          map[string]string
	what           string // names the table or prefix in logs
	log            zerolog.Logger
}

// newRouter routes by the topic template and re, route_regex as config
// compiled it (anchored, with a routedByValue group), or nil.
func newRouter(topic string, re *regexp.Regexp, what string, log zerolog.Logger) *router {
	r := &router{cache: map[string]string{}, what: what, log: log}
	before, after, found := strings.Cut(topic, "${routedByValue}")
	r.prefix, r.suffix, r.placeholder = before, after, found
	if !found {
		r.prefix = topic
	}
	if re != nil {
		r.re, r.group = re, re.SubexpIndex("routedByValue")
	}
	return r
}

// needsValue reports whether the topic depends on the route-by value at all.
func (r *router) needsValue() bool { return r.placeholder || r.re != nil }

const maxTopicCache = 4096

func (r *router) topic(value []byte) string {
	if !r.needsValue() {
		return r.prefix
	}
	if t, ok := r.cache[string(value)]; ok {
		return t
	}
	v := string(value)
	var t string
	if r.re == nil {
		t = r.prefix + v + r.suffix
	} else {
		m := r.re.FindStringSubmatch(v)
		switch {
		case m == nil:
			// RegexRouter leaves a record whose topic does not match alone, and
			// the Outbox Event Router set that topic to the route-by value.
			t = v
			if len(r.cache) < maxTopicCache {
				r.log.Warn().Str("source", r.what).Str("route_by_value", v).
					Msg("route_regex does not match the whole route_by value; as with Debezium, the event goes to the topic named by the value itself")
			}
		case r.placeholder:
			t = r.prefix + m[r.group] + r.suffix
		default:
			t = r.prefix
		}
	}
	if len(r.cache) < maxTopicCache {
		r.cache[v] = t
	}
	return t
}

// NewDecoder returns a decoder for the configured outbox tables and message prefixes.
func NewDecoder(tables []config.Table, messages []config.Message, log zerolog.Logger) (*Decoder, error) {
	d := &Decoder{
		log:      log,
		tables:   map[string]*rule{},
		rels:     map[uint32]*relation{},
		messages: map[string]*router{},
		msgFmt:   map[string]*eventFormat{},
	}
	for _, t := range tables {
		schema, name, err := config.SplitTable(t.Table)
		if err != nil {
			return nil, fmt.Errorf("outbox table %s: %w", t.Table, err)
		}
		re := t.RouteRegexp()
		if t.RouteRegex != "" && re == nil {
			return nil, fmt.Errorf("outbox table %s: route_regex is not compiled: the table was not validated (config.Table.Validate)", t.Table)
		}
		r := newRouter(t.Topic, re, t.Table, log)
		d.tables[schema+"."+name] = &rule{cfg: t, schema: schema, name: name, route: r,
			format: eventFormat{cloudEvents: t.CloudEvents, source: []byte(t.CloudEventsSource)}}
	}
	for _, m := range messages {
		d.messages[m.Prefix] = newRouter(m.Topic, nil, "message:"+m.Prefix, log)
		d.msgFmt[m.Prefix] = &eventFormat{cloudEvents: m.CloudEvents, source: []byte(m.CloudEventsSource)}
	}
	return d, nil
}

const byteaOID = 17

// ResolvePartitions lets the decoder recognise rows of a configured
// partitioned table that arrive under a partition's name: ancestors returns
// the partition ancestors of the relation schema.name ("schema.table",
// nearest first; none for a table that is not a partition). Postgres sends
// them so where the publication did not publish via the partition root at
// that point of the WAL (it reads the publication as of each change), which
// can be true of WAL the slot still holds after the option was turned on.
func (d *Decoder) ResolvePartitions(ancestors func(schema, name string) ([]string, error)) {
	d.ancestors = ancestors
}

func (d *Decoder) learnRelation(rel *pgoutput.Relation) error {
	full := rel.Namespace + "." + rel.Name
	as := d.tables[full]
	if as == nil && d.ancestors != nil {
		// Relation messages come once per relation and session (and after
		// its schema changes), so asking the catalog here is cheap.
		anc, err := d.ancestors(rel.Namespace, rel.Name)
		if err != nil {
			return err
		}
		for _, a := range anc {
			if as = d.tables[a]; as != nil {
				d.log.Warn().Str("partition", full).Str("table", as.cfg.Table).
					Msg("rows of a partition arrive under its own name (the publication did not publish via the partition root at this point of the WAL); relayed as rows of the outbox table")
				break
			}
		}
	}
	r, err := d.layoutAs(rel, as)
	if err != nil {
		// Forget the half-mapped layout: a row of this table must not be
		// decoded with it even if a caller carried on after the error.
		delete(d.rels, rel.ID)
		return err
	}
	d.rels[rel.ID] = r
	if r.rule == nil {
		d.log.Debug().Str("table", r.name).Msg("rows of a table that is not a configured outbox table are ignored")
	}
	return nil
}

// layout maps a relation's columns to the parts of an event, for WAL rows
// and rows read with SQL alike.
func (d *Decoder) layout(rel *pgoutput.Relation) (*relation, error) {
	return d.layoutAs(rel, d.tables[rel.Namespace+"."+rel.Name])
}

// layoutAs maps rel's columns with the rule of outbox table as, nil for a
// relation that is none.
func (d *Decoder) layoutAs(rel *pgoutput.Relation, as *rule) (*relation, error) {
	r := &relation{name: rel.Namespace + "." + rel.Name, rule: as}
	if r.rule == nil {
		return r, nil
	}
	cfg := r.rule.cfg
	find := func(col string) int {
		for i, c := range rel.Columns {
			if c.Name == col {
				return i
			}
		}
		return -1
	}
	var missing []string
	need := func(key, col string) int {
		i := find(col)
		if i < 0 {
			missing = append(missing, fmt.Sprintf("columns.%s %q", key, col))
		}
		return i
	}
	r.id = need("id", cfg.Columns.ID)
	r.key = need("key", cfg.Columns.Key)
	r.pay = need("payload", cfg.Columns.Payload)
	r.route = need("route_by", cfg.Columns.RouteBy)
	r.typ = need("type", cfg.Columns.Type)
	r.ts, r.part, r.trace = -1, -1, -1
	if cfg.Columns.Timestamp != "" {
		r.ts = need("timestamp", cfg.Columns.Timestamp)
	}
	if r.pay >= 0 {
		r.payBy = rel.Columns[r.pay].TypeOID == byteaOID
		r.ct = contentType(rel.Columns[r.pay].TypeOID)
	}
	// Header and partition columns are Debezium's "additional fields"
	// (table.fields.additional.placement header/partition), the only ones
	// table.fields.additional.error.on.missing=false lets go missing. A
	// fresh Relation message precedes the first row after any ALTER TABLE, so a
	// column added later is picked up then.
	additional := func(what, col string) int {
		i := find(col)
		if i < 0 {
			if cfg.OnMissingColumn == config.OnMissingColumnIgnore {
				d.log.Warn().Str("table", cfg.Table).Str("column", col).Str("use", what).
					Msg("column missing from outbox table; left out of its events (on_missing_column: ignore)")
			} else {
				missing = append(missing, fmt.Sprintf("%s %q", what, col))
			}
		}
		return i
	}
	if cfg.PartitionColumn != "" {
		r.part = additional("partition_column", cfg.PartitionColumn)
	}
	if cfg.TraceColumn != "" {
		r.trace = additional("trace_column", cfg.TraceColumn)
	}
	cols := make([]string, 0, len(cfg.Headers))
	for col := range cfg.Headers {
		cols = append(cols, col)
	}
	// Sorted, so that every event of a table carries its headers in one order.
	slices.Sort(cols)
	for _, col := range cols {
		i := additional("headers", col)
		if i < 0 {
			continue
		}
		hdr := cfg.Headers[col]
		if hdr == "" {
			hdr = col
		}
		r.hdrs = append(r.hdrs, hdrCol{idx: i, name: hdr})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("outbox table %s has no column for %s", cfg.Table, strings.Join(missing, ", "))
	}
	return r, nil
}

// RowMapper maps rows of one outbox table read with SQL (a snapshot or a
// replay) to events, exactly as the stream maps the table's inserts.
type RowMapper struct {
	d    *Decoder
	rel  *relation
	cols []pgoutput.Column
}

// RowColumn describes one column of the rows a RowMapper maps.
type RowColumn struct {
	Name    string
	TypeOID uint32
}

// RowMapper returns a mapper for rows of the configured outbox table
// schema.name with the given columns. Rows must be in Postgres' text output
// format, as pgoutput sends them.
func (d *Decoder) RowMapper(schema, name string, cols []RowColumn) (*RowMapper, error) {
	rel := &pgoutput.Relation{Namespace: schema, Name: name}
	for _, c := range cols {
		rel.Columns = append(rel.Columns, pgoutput.RelColumn{Name: c.Name, TypeOID: c.TypeOID})
	}
	r, err := d.layout(rel)
	if err != nil {
		return nil, err
	}
	if r.rule == nil {
		return nil, fmt.Errorf("%s is not a configured outbox table", r.name)
	}
	return &RowMapper{d: d, rel: r, cols: make([]pgoutput.Column, len(cols))}, nil
}

// Map maps one row: values[i] is column i in text format, nil for NULL.
// at stands in for the commit time, which a row read with SQL does not
// carry. The event copies what it keeps, so values may be reused.
func (m *RowMapper) Map(values [][]byte, at time.Time) (*Event, error) {
	if len(values) != len(m.cols) {
		return nil, fmt.Errorf("outbox table %s: row has %d columns, expected %d", m.rel.rule.cfg.Table, len(values), len(m.cols))
	}
	for i, v := range values {
		if v == nil {
			m.cols[i] = pgoutput.Column{Kind: 'n'}
		} else {
			m.cols[i] = pgoutput.Column{Kind: 't', Data: v}
		}
	}
	m.d.commitAt = at
	return m.d.insert(m.rel, m.cols)
}

// Decode decodes one pgoutput message.
func (d *Decoder) Decode(data []byte) (Result, error) {
	typ, err := d.p.Parse(data)
	if err != nil {
		return Result{}, err
	}
	switch typ {
	case pgoutput.MsgBegin:
		d.commitAt = pgoutput.TimeFromPG(d.p.Begin.CommitTime)
		return Result{Kind: KindBegin, LSN: d.p.Begin.FinalLSN, CommitTime: d.commitAt}, nil
	case pgoutput.MsgCommit:
		return Result{Kind: KindCommit, LSN: d.p.Commit.EndLSN, CommitTime: pgoutput.TimeFromPG(d.p.Commit.CommitTime)}, nil
	case pgoutput.MsgRelation:
		return Result{}, d.learnRelation(&d.p.Relation)
	case pgoutput.MsgInsert:
		rel, ok := d.rels[d.p.Insert.RelationID]
		if !ok {
			return Result{}, fmt.Errorf("insert for relation %d before its Relation message", d.p.Insert.RelationID)
		}
		if rel.rule == nil {
			return Result{}, nil
		}
		ev, err := d.insert(rel, d.p.Insert.Tuple)
		if err != nil {
			return Result{}, err
		}
		return Result{Kind: KindEvent, Event: ev}, nil
	case pgoutput.MsgUpdate:
		return Result{}, d.update()
	case pgoutput.MsgMessage:
		return d.message()
	}
	// Deletes are the normal cleanup of an outbox and carry no event; origin,
	// type and truncate messages need no action.
	return Result{}, nil
}

func (d *Decoder) update() error {
	rel, ok := d.rels[d.p.Update.RelationID]
	if !ok || rel.rule == nil {
		return nil
	}
	id := ""
	if rel.id < len(d.p.Update.New) {
		id = string(d.p.Update.New[rel.id].Data)
	}
	switch rel.rule.cfg.OnUpdate {
	case config.OnUpdateFatal:
		return fmt.Errorf("UPDATE on outbox table %s (event id %s): outbox rows must be inserted, not updated (on_update: fatal)", rel.rule.cfg.Table, id)
	case config.OnUpdateError:
		d.log.Error().Str("table", rel.rule.cfg.Table).Str("id", id).Msg("UPDATE on outbox table ignored: outbox rows must be inserted, not updated")
	default:
		d.log.Warn().Str("table", rel.rule.cfg.Table).Str("id", id).Msg("UPDATE on outbox table ignored: outbox rows must be inserted, not updated")
	}
	return nil
}

func colText(cols []pgoutput.Column, i int) ([]byte, bool) {
	c := cols[i]
	switch c.Kind {
	case 't', 'b':
		return c.Data, true
	}
	return nil, false
}

func (d *Decoder) insert(rel *relation, cols []pgoutput.Column) (*Event, error) {
	cfg := &rel.rule.cfg
	for _, i := range []int{rel.id, rel.key, rel.pay, rel.route, rel.typ, rel.ts, rel.part, rel.trace} {
		if i >= len(cols) {
			return nil, fmt.Errorf("outbox table %s: insert has %d columns, relation announced more", cfg.Table, len(cols))
		}
	}
	for _, h := range rel.hdrs {
		if h.idx >= len(cols) {
			return nil, fmt.Errorf("outbox table %s: insert has %d columns, relation announced more", cfg.Table, len(cols))
		}
	}
	id, ok := colText(cols, rel.id)
	if !ok {
		return nil, fmt.Errorf("outbox table %s: column %s (id) is NULL: every event needs an id", cfg.Table, cfg.Columns.ID)
	}
	key, hasKey := colText(cols, rel.key)
	route, hasRoute := colText(cols, rel.route)
	if !hasRoute && rel.rule.route.needsValue() {
		// Debezium fails here too; publishing to a guessed topic would hide
		// the event from every consumer of the intended one.
		return nil, fmt.Errorf("outbox table %s: column %s (route_by) of event %s is NULL, and the topic %q needs it",
			cfg.Table, cfg.Columns.RouteBy, id, cfg.Topic)
	}
	typ, _ := colText(cols, rel.typ)
	payload, hasPayload := colText(cols, rel.pay)

	// One allocation holds every byte the event keeps.
	n := len(id) + len(key) + len(payload) + len(typ)
	for _, h := range rel.hdrs {
		n += len(cols[h.idx].Data)
	}
	buf := make([]byte, 0, n)
	take := func(b []byte) []byte {
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	ev := &Event{
		Table:     cfg.Table,
		Topic:     rel.rule.route.topic(route),
		Timestamp: d.commitAt,
		Partition: -1,
	}
	idBytes := take(id)
	// buf is never written after take, so the id string can share it.
	ev.ID = unsafe.String(unsafe.SliceData(idBytes), len(idBytes)) //nolint:gosec // G103: saves an allocation per event; idBytes is immutable from here on
	if hasKey {
		ev.Key = take(key)
	}
	// A NULL payload is a null value with or without the tombstone option:
	// that is what Debezium writes through a String or ByteArray converter,
	// the converters whose output the relay's raw payload bytes match. The
	// option adds empty payloads, as route.tombstone.on.empty.payload does.
	if hasPayload {
		if rel.payBy {
			v, err := decodeBytea(payload)
			if err != nil {
				return nil, fmt.Errorf("outbox table %s: column %s (payload) of event %s: %w", cfg.Table, cfg.Columns.Payload, ev.ID, err)
			}
			ev.Value = v
			if cfg.TombstoneOnEmptyPayload && len(v) == 0 {
				ev.Value = nil
			}
		} else {
			ev.Value = take(payload)
			if cfg.TombstoneOnEmptyPayload && blank(payload) {
				ev.Value = nil
			}
		}
	}
	ev.Headers = ev.hdrs[:0]
	if len(rel.hdrs) > 0 {
		ev.Headers = make([]Header, 0, 2+len(rel.hdrs))
	}
	ev.Headers = append(ev.Headers, Header{Key: "id", Value: idBytes})
	if typ != nil {
		ev.Headers = append(ev.Headers, Header{Key: "type", Value: take(typ)})
	}
	for _, h := range rel.hdrs {
		// Debezium adds the header for a NULL column too, with a null value,
		// so consumers can tell "column NULL" from "column not mapped".
		var v []byte
		if c, ok := colText(cols, h.idx); ok {
			v = take(c)
		}
		ev.Headers = append(ev.Headers, Header{Key: h.name, Value: v})
	}
	if rel.ts >= 0 {
		if v, ok := colText(cols, rel.ts); ok {
			ts, err := parseTimestamp(string(v))
			if err != nil {
				return nil, fmt.Errorf("outbox table %s: column %s (timestamp) of event %s: %w", cfg.Table, cfg.Columns.Timestamp, ev.ID, err)
			}
			ev.Timestamp = ts
		}
	}
	if rel.part >= 0 {
		if v, ok := colText(cols, rel.part); ok {
			p, err := strconv.ParseInt(string(v), 10, 32)
			if err != nil || p < 0 {
				return nil, fmt.Errorf("outbox table %s: column %s (partition_column) of event %s: %q is not a partition number", cfg.Table, cfg.PartitionColumn, ev.ID, v)
			}
			ev.Partition = int32(p)
		}
	}
	if rel.rule.format.cloudEvents {
		var t []byte
		if typ != nil {
			t = ev.Headers[1].Value
		}
		if err := addCloudEvents(ev, &rel.rule.format, t, rel.ct, "outbox table "+cfg.Table); err != nil {
			return nil, err
		}
	}
	if rel.trace >= 0 {
		if v, ok := colText(cols, rel.trace); ok {
			d.addTrace(ev, v, cfg.Table, cfg.TraceColumn)
		}
	}
	return ev, nil
}

// addTrace turns a trace column's value into traceparent and tracestate
// headers; a value that holds no valid traceparent is logged and left out.
func (d *Decoder) addTrace(ev *Event, v []byte, table, column string) {
	parent, state := parseTrace(v)
	if parent == nil {
		// Once per table at warn: a writer that fills the column wrongly
		// would otherwise log once per event.
		lvl := d.log.Debug()
		if !d.traceWarned[table] {
			if d.traceWarned == nil {
				d.traceWarned = map[string]bool{}
			}
			d.traceWarned[table] = true
			lvl = d.log.Warn()
		}
		lvl.Str("table", table).Str("column", column).Str("id", ev.ID).
			Msg("trace_column holds no valid W3C traceparent; the event is published without trace context (further ones are logged at debug)")
		return
	}
	ev.Headers = append(ev.Headers, Header{Key: "traceparent", Value: parent})
	if state != nil {
		ev.Headers = append(ev.Headers, Header{Key: "tracestate", Value: state})
	}
}

// blank is Java's String.trim().isEmpty(), which Debezium uses to call a
// payload empty: nothing but ASCII control characters and spaces.
func blank(b []byte) bool {
	for _, c := range b {
		if c > ' ' {
			return false
		}
	}
	return true
}

// decodeBytea decodes bytea's text output (hex format, the default since 9.0).
func decodeBytea(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != '\\' || b[1] != 'x' {
		return nil, errors.New("bytea value not in hex format (set bytea_output = 'hex')")
	}
	out := make([]byte, hex.DecodedLen(len(b)-2))
	if _, err := hex.Decode(out, b[2:]); err != nil {
		return nil, fmt.Errorf("bytea value: %w", err)
	}
	return out, nil
}

var tsLayouts = []string{
	"2006-01-02 15:04:05.999999999-07",
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999-07:00:00",
	"2006-01-02 15:04:05.999999999",
	time.RFC3339Nano,
}

// parseTimestamp parses timestamp and timestamptz text output (ISO DateStyle);
// values without a zone are taken as UTC.
func parseTimestamp(s string) (time.Time, error) {
	for _, l := range tsLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a timestamp", s)
}
