package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/sink"
	"github.com/relay-dev/relay/pkg/snapshot"
)

// snapshotJob is the reading an attempt does before it streams: the tables
// of an initial snapshot, or those added to the config or left unfinished by
// an interrupted one.
type snapshotJob struct {
	tables []config.Table
	conn   *pgx.Conn // the read transaction is open on it
	at     time.Time
	state  checkpoint.SnapshotProgress
}

// SnapshotProgress returns the live progress of the snapshot, for metrics.
func (p *Pipeline) SnapshotProgress() *snapshot.Progress { return &p.snapProgress }

// openSnapshot opens the read transaction of a job: under the slot's
// exported snapshot when it was just created, otherwise under a fresh one.
func (p *Pipeline) openSnapshot(ctx context.Context, snapshotName string) (*pgx.Conn, time.Time, error) {
	pg := p.cfg.Postgres
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, pg.URL.Reveal())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("snapshot: connecting to postgres %s: %s", pg.URL.Redacted(), pg.URL.RedactError(err))
	}
	at, err := snapshot.Begin(cctx, conn, snapshotName)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, time.Time{}, err
	}
	return conn, at, nil
}

// runSnapshot reads the job's tables into out. After each table it waits for
// every record to be acknowledged and writes a progress record naming the
// table, so that an interrupted snapshot resumes with the next one; the last
// record says the snapshot is complete. Until then the tracker has nothing
// beyond its start to confirm. stop ends it early (clean stop): the
// unfinished table is read again at the next start.
func (p *Pipeline) runSnapshot(hard, stop context.Context, job *snapshotJob, dec *decode.Decoder, store *sink.ProgressStore, base checkpoint.Record, out chan<- *decode.Event) error {
	// The read transaction holds back VACUUM: it ends with the reading.
	defer job.conn.Close(context.Background())
	ctx, cancel := context.WithCancel(hard)
	defer cancel()
	unwatch := context.AfterFunc(stop, cancel)
	defer unwatch()
	state := job.state
	save := func() error {
		rec := base
		rec.LSN, rec.Time = p.tracker.Confirmed(), time.Now()
		s := state
		s.Tables = slices.Clone(state.Tables)
		rec.Snapshot = &s
		p.snapState.Store(&s)
		if p.cfg.Kafka.ExactlyOnce() {
			// Acked rows may still sit in an open Kafka transaction: the
			// state must commit with them, in the transaction's own
			// progress record, or an abort would leave it vouching for
			// rows that are not there.
			return nil
		}
		return store.Save(hard, rec)
	}

	started := time.Now()
	p.log.Info().Strs("tables", tableNames(job.tables)).Time("snapshot_time", job.at).Msg("snapshot: publishing the rows already in the outbox tables before streaming")
	var tableErr error
	rows, err := snapshot.Read(ctx, job.conn, snapshot.Options{
		Tables: job.tables, OrderBy: p.cfg.SnapshotOrderBy, BatchSize: p.cfg.Snapshot.BatchSize,
		Decoder: dec, Tracker: p.tracker, Progress: &p.snapProgress, Log: p.log, At: job.at,
		OnProgress: func(rows, estimate int64) {
			// Shows in relay status; a failed write is retried by the next.
			state.Rows, state.RowsEstimate = rows, estimate
			if err := save(); err != nil {
				p.log.Debug().Err(err).Msg("snapshot: writing its progress to the progress topic")
			}
		},
		OnTable: func(table string) {
			if tableErr != nil {
				return
			}
			if tableErr = snapshot.WaitAcked(ctx, p.tracker); tableErr != nil {
				return
			}
			state.Tables = append(state.Tables, snapshot.TableName(config.Table{Table: table}))
			tableErr = save()
		},
	}, out)
	err = errors.Join(err, tableErr)
	if stop.Err() != nil {
		p.log.Info().Int64("rows", rows).Msg("snapshot: stopping before it finished; the unfinished tables are read again at the next start")
		return context.Canceled
	}
	if err != nil {
		return err
	}
	state.Done, state.Rows, state.RowsEstimate = true, 0, 0
	if err := save(); err != nil {
		return err
	}
	elapsed := time.Since(started)
	p.log.Info().Int64("rows", rows).Dur("took", elapsed).Float64("rows_per_second", float64(rows)/max(elapsed.Seconds(), 1e-9)).
		Msg("snapshot complete")
	return nil
}

// creating reports whether rec was written just before creating the slot,
// which it cannot vouch for yet.
func creating(rec checkpoint.Record) bool {
	return rec.LSN == 0 && rec.Snapshot != nil && !rec.Snapshot.Done
}

func sameSnapshot(a, b *checkpoint.SnapshotProgress) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Done == b.Done && slices.Equal(a.Tables, b.Tables)
}

func tableNames(tables []config.Table) []string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = snapshot.TableName(t)
	}
	return names
}
