// Package inbox makes a Kafka consumer apply each event at most once per
// consumer group, even though the relay (like every at-least-once producer)
// may deliver an event more than once.
//
// The consumer's own Postgres transaction records the event's id (the
// record's `id` header) in an inbox table under a unique (consumer_group,
// id) key with INSERT ... ON CONFLICT DO NOTHING, then runs the business
// change: both commit together or not at all. A duplicate finds its id
// already there and is skipped; a concurrent duplicate waits on the unique
// key until the first transaction ends, then is skipped (or, if the first
// rolled back, processed). Commit the Kafka offset only after Process
// returns: a crash in between redelivers the record, which the inbox then
// skips.
//
// Process is the core, for any client: franz-go users pass the id header
// themselves; ProcessMessage takes a sarama.ConsumerMessage.
package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/internal/ident"
)

// DefaultTable is the inbox table's name when Options.Table is empty.
const DefaultTable = "public.inbox"

// IDHeader is the record header carrying the event id: the relay's, and
// Debezium's Outbox Event Router's.
const IDHeader = "id"

// Options configures an Inbox.
type Options struct {
	// Table is the inbox table, schema.table (parts may be double-quoted).
	// Default DefaultTable.
	Table string
}

// PgxDB is what New needs: *pgxpool.Pool or *pgx.Conn.
type PgxDB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Inbox dedupes events for the consumers of one database. Tx is the
// transaction type the business function receives: pgx.Tx from New,
// *sql.Tx from NewSQL. It is safe for concurrent use as far as the
// underlying pool is.
type Inbox[Tx any] struct {
	table  string // quoted
	db     driver[Tx]
	mark   string
	prune  string
	create string
}

// driver hides the two database APIs behind what Process needs.
type driver[Tx any] interface {
	begin(ctx context.Context) (Tx, error)
	exec(ctx context.Context, tx Tx, sql string, args ...any) (int64, error)
	execDB(ctx context.Context, sql string, args ...any) (int64, error)
	commit(ctx context.Context, tx Tx) error
	rollback(ctx context.Context, tx Tx) error
}

// New returns an inbox on a pgx pool or connection.
func New(db PgxDB, opts Options) (*Inbox[pgx.Tx], error) {
	return newInbox[pgx.Tx](pgxDriver{db}, opts)
}

// NewSQL returns an inbox on a database/sql pool whose driver takes $n
// parameters (pgx's stdlib, lib/pq).
func NewSQL(db *sql.DB, opts Options) (*Inbox[*sql.Tx], error) {
	return newInbox[*sql.Tx](sqlDriver{db}, opts)
}

func newInbox[Tx any](d driver[Tx], opts Options) (*Inbox[Tx], error) {
	name := opts.Table
	if name == "" {
		name = DefaultTable
	}
	table, err := quoteTable(name)
	if err != nil {
		return nil, fmt.Errorf("inbox: table: %w", err)
	}
	return &Inbox[Tx]{
		table: table,
		db:    d,
		mark:  "INSERT INTO " + table + " (consumer_group, id) VALUES ($1, $2) ON CONFLICT (consumer_group, id) DO NOTHING",
		prune: "DELETE FROM " + table + " WHERE processed_at < now() - make_interval(secs => $1)",
		// processed_at is indexed for Prune; the primary key serves the
		// dedupe lookups.
		create: "CREATE TABLE IF NOT EXISTS " + table + ` (
	consumer_group text NOT NULL,
	id text NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer_group, id)
)`,
	}, nil
}

// CreateTable returns the DDL of the inbox table, CREATE TABLE IF NOT
// EXISTS, for migrations; CreateIndex the index Prune uses.
func (in *Inbox[Tx]) CreateTable() string { return in.create }

// CreateIndex returns CREATE INDEX IF NOT EXISTS on processed_at.
func (in *Inbox[Tx]) CreateIndex() string {
	return "CREATE INDEX IF NOT EXISTS " + indexName(in.table) + " ON " + in.table + " (processed_at)"
}

// ErrNoID is returned for a record without an id header: it cannot be
// deduplicated, and skipping it silently could lose an event.
var ErrNoID = errors.New("inbox: record has no id header")

// Process runs fn in a new transaction that also records id as processed by
// group, and commits both together. If group has already processed id,
// fn is not called and Process returns false, nil. An error from fn (or
// from the commit) rolls everything back, so the event counts as not yet
// processed and a redelivery runs fn again; Process returns that error.
func (in *Inbox[Tx]) Process(ctx context.Context, group, id string, fn func(tx Tx) error) (processed bool, err error) {
	if id == "" {
		return false, ErrNoID
	}
	if group == "" {
		return false, errors.New("inbox: empty consumer group")
	}
	tx, err := in.db.begin(ctx)
	if err != nil {
		return false, fmt.Errorf("inbox: beginning a transaction for event %s: %w", id, err)
	}
	done := false
	defer func() {
		if !done {
			_ = in.db.rollback(context.WithoutCancel(ctx), tx)
		}
	}()
	// The mark goes first: a concurrent duplicate then waits here on the
	// unique key instead of running fn alongside.
	n, err := in.db.exec(ctx, tx, in.mark, group, id)
	if err != nil {
		return false, fmt.Errorf("inbox: recording event %s for group %s in %s: %w", id, group, in.table, err)
	}
	if n == 0 {
		return false, nil
	}
	if err := fn(tx); err != nil {
		return false, err
	}
	done = true
	if err := in.db.commit(ctx, tx); err != nil {
		return false, fmt.Errorf("inbox: committing event %s for group %s: %w", id, group, err)
	}
	return true, nil
}

// ProcessMessage is Process with the id from msg's id header.
func (in *Inbox[Tx]) ProcessMessage(ctx context.Context, group string, msg *sarama.ConsumerMessage, fn func(tx Tx) error) (bool, error) {
	for _, h := range msg.Headers {
		if h != nil && string(h.Key) == IDHeader {
			return in.Process(ctx, group, string(h.Value), fn)
		}
	}
	return false, fmt.Errorf("%w (topic %s, partition %d, offset %d)", ErrNoID, msg.Topic, msg.Partition, msg.Offset)
}

// Prune deletes ids processed longer ago than olderThan, for every group,
// and returns how many. Keep olderThan longer than any redelivery can come
// late (the topic's retention, if consumers may rewind to its start): a
// pruned id is processed again if its event is redelivered.
func (in *Inbox[Tx]) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	n, err := in.db.execDB(ctx, in.prune, olderThan.Seconds())
	if err != nil {
		return 0, fmt.Errorf("inbox: pruning %s: %w", in.table, err)
	}
	return n, nil
}

type pgxDriver struct{ db PgxDB }

func (d pgxDriver) begin(ctx context.Context) (pgx.Tx, error) { return d.db.Begin(ctx) }
func (d pgxDriver) exec(ctx context.Context, tx pgx.Tx, sql string, args ...any) (int64, error) {
	tag, err := tx.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}
func (d pgxDriver) execDB(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := d.db.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}
func (d pgxDriver) commit(ctx context.Context, tx pgx.Tx) error   { return tx.Commit(ctx) }
func (d pgxDriver) rollback(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) }

type sqlDriver struct{ db *sql.DB }

func (d sqlDriver) begin(ctx context.Context) (*sql.Tx, error) { return d.db.BeginTx(ctx, nil) }
func (d sqlDriver) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (int64, error) {
	return rowsAffected(tx.ExecContext(ctx, q, args...))
}
func (d sqlDriver) execDB(ctx context.Context, q string, args ...any) (int64, error) {
	return rowsAffected(d.db.ExecContext(ctx, q, args...))
}
func (d sqlDriver) commit(_ context.Context, tx *sql.Tx) error   { return tx.Commit() }
func (d sqlDriver) rollback(_ context.Context, tx *sql.Tx) error { return tx.Rollback() }

func rowsAffected(r sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// quoteTable parses schema.table as the relay's config does (a bare name is
// in public; quoted parts keep their case, unquoted ones fold to lower case)
// and quotes it.
func quoteTable(name string) (string, error) {
	schema, table, err := ident.Table(name)
	if err != nil {
		return "", err
	}
	return pgx.Identifier{schema, table}.Sanitize(), nil
}

// indexName derives the processed_at index's name from the quoted table name.
func indexName(quoted string) string {
	_, table, _ := strings.Cut(quoted, `"."`)
	table = strings.TrimSuffix(table, `"`)
	return pgx.Identifier{table + "_processed_at"}.Sanitize()
}
