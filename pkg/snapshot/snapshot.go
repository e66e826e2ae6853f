// Package snapshot publishes rows that already sit in outbox tables: the
// initial snapshot (rows committed before the relay's slot existed, read
// under the snapshot the slot exported) and replay (rows re-published on
// request). Rows are read with SQL in text format, mapped by the stream's own
// mapping (decode.RowMapper) and handed to the same producer under the same
// checkpoint tracker, so they share its in-flight bound and ack tracking.
//
// Reading holds one transaction open on a regular connection for the whole
// run; a cursor per table fetches batch_size rows at a time, so memory stays
// bounded whatever the table's size.
package snapshot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// Progress is a run's live state, read by metrics, status and the progress
// bar. The zero value is ready to use.
type Progress struct {
	Running   atomic.Bool
	RowsDone  atomic.Int64 // rows handed to the producer
	RowsTotal atomic.Int64 // estimate from pg_class.reltuples (0: unknown)
	mu        sync.Mutex
	table     string
}

// Table returns the table being read, or "".
func (p *Progress) Table() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.table
}

func (p *Progress) setTable(t string) {
	p.mu.Lock()
	p.table = t
	p.mu.Unlock()
}

// Options describe one run.
type Options struct {
	Tables []config.Table
	// OrderBy returns a table's order_by column list ("" for physical order).
	OrderBy   func(config.Table) string
	Where     string // replay only: an SQL condition on the rows
	BatchSize int
	Decoder   *decode.Decoder // not shared with a running stream
	Tracker   *checkpoint.Tracker
	Progress  *Progress // optional
	Log       zerolog.Logger
	// At stands in for the commit time of every row (which SQL cannot
	// tell): the time the snapshot was taken.
	At time.Time
	// OnTable is called after every row of a table was handed over.
	OnTable func(table string)
	// OnProgress is called with the rows handed over so far and the
	// estimate, as often as progress is logged.
	OnProgress func(rows, estimate int64)
}

// logEvery is how often a long run logs its progress.
const logEvery = 10 * time.Second

// Read publishes every row of opts.Tables visible to the transaction open on
// conn, table by table in the configured order, handing each event to out
// once the tracker admitted it. It returns the number of rows handed over.
// It does not wait for acks: the caller does, through the tracker.
func Read(ctx context.Context, conn *pgx.Conn, opts Options, out chan<- *decode.Event) (int64, error) {
	p := opts.Progress
	if p == nil {
		p = &Progress{}
	}
	p.Running.Store(true)
	defer p.Running.Store(false)
	defer p.setTable("")
	pc := conn.PgConn()
	// A synchronized scan may start mid-table, where another scan is;
	// physical order must begin at the first block. Text output must be
	// what pgoutput sends.
	if err := execSimple(ctx, pc, "SET LOCAL synchronize_seqscans = off; SET LOCAL bytea_output = 'hex'; SET LOCAL DateStyle = 'ISO'"); err != nil {
		return 0, fmt.Errorf("snapshot session settings: %w", err)
	}
	var total int64
	for _, t := range opts.Tables {
		n, err := estimate(ctx, conn, t)
		if err != nil {
			return 0, err
		}
		total += n
	}
	p.RowsTotal.Store(total)
	var done int64
	lastLog := time.Now()
	for _, t := range opts.Tables {
		p.setTable(t.Table)
		orderBy := ""
		if opts.OrderBy != nil {
			orderBy = opts.OrderBy(t)
		}
		q, err := query(t, orderBy, opts.Where)
		if err != nil {
			return done, err
		}
		opts.Log.Info().Str("table", t.Table).Str("order_by", orderOrPhysical(orderBy)).Msg("snapshot: reading table")
		if err := execSimple(ctx, pc, "DECLARE relay_snapshot NO SCROLL CURSOR FOR "+q); err != nil {
			return done, denied(t, fmt.Errorf("snapshot of %s: %s: %w", t.Table, q, err))
		}
		var mapper *decode.RowMapper
		fetch := "FETCH FORWARD " + strconv.Itoa(max(opts.BatchSize, 1)) + " FROM relay_snapshot"
		values := [][]byte{}
		for {
			rr := pc.ExecParams(ctx, fetch, nil, nil, nil, nil)
			if mapper == nil {
				fields := rr.FieldDescriptions()
				if len(fields) == 0 {
					// A failed FETCH describes no columns; its error is the
					// one to report.
					_, err := rr.Close()
					return done, fmt.Errorf("snapshot of %s: %s: %w", t.Table, fetch, cmp.Or(err, errors.New("no columns")))
				}
				if mapper, err = newMapper(opts.Decoder, t, fields); err != nil {
					rr.Close()
					return done, err
				}
			}
			rows := 0
			for rr.NextRow() {
				rows++
				values = append(values[:0], rr.Values()...)
				ev, err := mapper.Map(values, opts.At)
				if err != nil {
					// As in the stream: skipping a row it cannot map would
					// lose an event.
					rr.Close()
					return done, fault.Fatal(fmt.Errorf("snapshot: %w", err))
				}
				if err := handOver(ctx, opts.Tracker, ev, out); err != nil {
					rr.Close()
					return done, err
				}
				done++
				p.RowsDone.Store(done)
			}
			if _, err := rr.Close(); err != nil {
				return done, fmt.Errorf("snapshot of %s: %w", t.Table, err)
			}
			if time.Since(lastLog) >= logEvery {
				lastLog = time.Now()
				opts.Log.Info().Str("table", t.Table).Int64("rows_done", done).Int64("rows_total_estimate", total).Msg("snapshot in progress")
				if opts.OnProgress != nil {
					opts.OnProgress(done, total)
				}
			}
			if rows < opts.BatchSize {
				break
			}
		}
		if err := execSimple(ctx, pc, "CLOSE relay_snapshot"); err != nil {
			return done, fmt.Errorf("snapshot of %s: %w", t.Table, err)
		}
		if opts.OnTable != nil {
			opts.OnTable(t.Table)
		}
	}
	return done, nil
}

func orderOrPhysical(orderBy string) string {
	if orderBy == "" {
		return "physical (ctid)"
	}
	return orderBy
}

// query builds the cursor's SELECT. Every name is quoted; the replay's
// WHERE is the operator's own SQL, run with the relay's privileges.
func query(t config.Table, orderBy, where string) (string, error) {
	schema, name, err := config.SplitTable(t.Table)
	if err != nil {
		return "", err
	}
	q := "SELECT * FROM " + pgx.Identifier{schema, name}.Sanitize()
	if where != "" {
		q += " WHERE (" + where + ")"
	}
	cols, err := config.SplitColumns(orderBy)
	if err != nil {
		return "", fmt.Errorf("order_by of %s: %w", t.Table, err)
	}
	switch {
	case len(cols) > 0:
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = pgx.Identifier{c}.Sanitize()
		}
		q += " ORDER BY " + strings.Join(quoted, ", ")
	case where != "":
		// A condition may make the planner pick an index, whose order is
		// not the physical one a plain scan gives.
		q += " ORDER BY ctid"
	}
	return q, nil
}

func newMapper(d *decode.Decoder, t config.Table, fields []pgconn.FieldDescription) (*decode.RowMapper, error) {
	schema, name, _ := config.SplitTable(t.Table)
	cols := make([]decode.RowColumn, len(fields))
	for i, f := range fields {
		cols[i] = decode.RowColumn{Name: f.Name, TypeOID: f.DataTypeOID}
	}
	m, err := d.RowMapper(schema, name, cols)
	if err != nil {
		return nil, fault.Fatal(fmt.Errorf("snapshot: %w", err))
	}
	return m, nil
}

// estimate is the planner's row count for t; 0 when never analyzed.
func estimate(ctx context.Context, conn *pgx.Conn, t config.Table) (int64, error) {
	schema, name, err := config.SplitTable(t.Table)
	if err != nil {
		return 0, err
	}
	var n float64
	err = conn.QueryRow(ctx, `SELECT c.reltuples FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
		WHERE s.nspname = $1 AND c.relname = $2`, schema, name).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("snapshot: outbox table %s does not exist", t.Table)
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot: estimating the rows of %s: %w", t.Table, err)
	}
	return max(int64(n), 0), nil
}

// handOver waits for in-flight capacity, then passes ev to the producer.
func handOver(ctx context.Context, tr *checkpoint.Tracker, ev *decode.Event, out chan<- *decode.Event) error {
	size := ev.Size()
	for {
		seq, ok := tr.TryReserve(size)
		if ok {
			ev.Seq = seq
			break
		}
		select {
		case <-tr.Space():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case out <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// denied makes a missing SELECT privilege fatal with the fix: retrying
// cannot grant it.
func denied(t config.Table, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		schema, name, _ := config.SplitTable(t.Table)
		return fault.Fatal(fmt.Errorf("%w (the initial snapshot and replay read the outbox table: GRANT SELECT ON %s TO the relay's role, or set snapshot.mode: never)",
			err, pgx.Identifier{schema, name}.Sanitize()))
	}
	return err
}

func execSimple(ctx context.Context, pc *pgconn.PgConn, sql string) error {
	_, err := pc.Exec(ctx, sql).ReadAll()
	return err
}

// Begin opens the read transaction on conn: REPEATABLE READ, read only,
// under the exported snapshot name when one is given (the slot's, so the
// rows read are exactly those committed before its consistent point). It
// returns the transaction's start time.
func Begin(ctx context.Context, conn *pgx.Conn, snapshotName string) (time.Time, error) {
	sql := "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	if snapshotName != "" {
		sql += "; SET TRANSACTION SNAPSHOT '" + strings.ReplaceAll(snapshotName, "'", "''") + "'"
	}
	if err := execSimple(ctx, conn.PgConn(), sql); err != nil {
		return time.Time{}, fmt.Errorf("snapshot: opening the read transaction: %w", err)
	}
	var at time.Time
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("snapshot: %w", err)
	}
	return at, nil
}

// WaitAcked waits until every event handed to the tracker is acknowledged.
func WaitAcked(ctx context.Context, tr *checkpoint.Tracker) error {
	for !tr.Idle() {
		select {
		case <-tr.Space():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
