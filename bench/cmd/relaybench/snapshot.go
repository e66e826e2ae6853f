package main

import (
	"context"
	"time"
)

// snapshotRun is an outbox that already holds rows when the relay first
// starts: no slot yet, so the relay creates it with an exported snapshot and
// publishes every row by reading the table (snapshot.mode initial, the
// default) before it streams.
type snapshotRun struct {
	events      int
	writeTime   time.Duration
	tableBytes  int64
	relay       time.Duration // process start -> every row in Kafka
	firstRecord time.Duration
	peak        int64 // VmHWM
	delivered   int64
	cpu         cpuUse
	relayCPU    time.Duration
}

func (s snapshotRun) rate() float64 { return rate(s.events, s.relay) }

// targetSnapshotRate is the snapshot target: rows per second.
const targetSnapshotRate = 50000

func runSnapshot(ctx context.Context, o *options, res *results) error {
	logf("snapshot: starting PostgreSQL and Kafka")
	w, err := newWorld(ctx, o)
	if err != nil {
		return err
	}
	defer w.close()
	if res.pgVersion == "" {
		res.pgVersion = w.serverVersion(ctx)
	}
	s := snapshotRun{events: o.snapN}
	err = snapshotOnce(ctx, o, w, &s)
	if s.relay > 0 {
		res.snapshot = &s
	}
	return err
}

func snapshotOnce(ctx context.Context, o *options, w *world, s *snapshotRun) error {
	logf("snapshot: writing %d rows in %d-row INSERT ... SELECT transactions, before any slot exists", s.events, o.memBatch)
	t0 := time.Now()
	if err := bulkBacklog(ctx, w, s.events, o.memBatch, o.waitTimeout); err != nil {
		return err
	}
	s.writeTime = time.Since(t0)
	// Vacuumed and analyzed as a table that has been around would be: the
	// relay's progress estimate reads pg_class.reltuples.
	if err := w.exec(ctx, "VACUUM ANALYZE public.outbox"); err != nil {
		return err
	}
	if err := w.queryRow(ctx, "SELECT pg_table_size('public.outbox')", nil, &s.tableBytes); err != nil {
		return err
	}
	logf("snapshot: wrote %d rows in %s (table %d MB)", s.events, s.writeTime.Round(time.Millisecond), s.tableBytes>>20)

	run, err := timeRelay(ctx, o, w, "snapshot", s.events)
	s.delivered = run.delivered
	if err != nil {
		return err
	}
	s.relay, s.firstRecord, s.cpu = run.elapsed, run.firstRecord, run.cpu
	s.peak, s.relayCPU = run.peak, run.relayCPU
	logf("snapshot: %d rows in %s (%.0f rows/s; first record after %s), peak RSS %d MB, relay CPU %s",
		s.events, s.relay.Round(time.Millisecond), s.rate(), s.firstRecord.Round(time.Millisecond), s.peak>>20, s.relayCPU.Round(time.Millisecond))
	return nil
}
