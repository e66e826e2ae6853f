package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// memoryRun is a large backlog met by a broker that refuses every produce
// for a while: the relay must stop reading WAL at its in-flight cap rather
// than buffer the backlog.
type memoryRun struct {
	events    int
	writeTime time.Duration
	walBytes  int64
	stall     time.Duration

	samples            []int64 // VmRSS every rssEvery during the stall
	stallMin, stallMax int64
	stallPeak          int64   // VmHWM at the end of the stall
	refused            int     // produce requests the broker refused
	inflight           float64 // relay_inflight_events at the end of the stall
	inflightBytes      float64

	drainAfter time.Duration // fault removed -> every event in Kafka
	peak       int64         // VmHWM over the whole run
	delivered  int64
	reconnects float64
}

const rssEvery = 500 * time.Millisecond

func runMemory(ctx context.Context, o *options, res *results) error {
	w, err := startSection(ctx, o, res, "memory")
	if err != nil {
		return err
	}
	defer w.close()
	m := memoryRun{events: o.memN, stall: o.stall}
	err = memoryOnce(ctx, o, w, &m)
	if m.writeTime > 0 {
		res.memory = &m
	}
	return err
}

func memoryOnce(ctx context.Context, o *options, w *world, m *memoryRun) error {
	startLSN, err := w.currentLSN(ctx)
	if err != nil {
		return err
	}
	logf("memory: writing %d events in %d-event INSERT ... SELECT transactions", m.events, o.memBatch)
	t0 := time.Now()
	if err := bulkBacklog(ctx, w, m.events, o.memBatch, o.waitTimeout); err != nil {
		return err
	}
	m.writeTime = time.Since(t0)
	endLSN, err := w.currentLSN(ctx)
	if err != nil {
		return err
	}
	if err := w.queryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint", []any{endLSN, startLSN}, &m.walBytes); err != nil {
		return err
	}
	logf("memory: wrote %d events in %s, %d MB of WAL", m.events, m.writeTime.Round(time.Millisecond), m.walBytes>>20)

	fault := w.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	removed := false
	defer func() {
		if !removed {
			fault.Remove()
		}
	}()
	cfg, addr, err := w.relayConfig("memory")
	if err != nil {
		return err
	}
	r, err := startRelay(o.relayBin, cfg, addr)
	if err != nil {
		return err
	}
	defer r.stop()
	peak := &peakRSS{pid: r.pid()}

	// The stall starts at the first refusal: from then on the relay has
	// events it cannot get rid of.
	if err := waitUntil(ctx, r, 2*time.Minute, 20*time.Millisecond, "the relay's first produce request", func() (bool, error) {
		return fault.Hits() > 0, nil
	}); err != nil {
		return err
	}
	logf("memory: broker refusing produce for %s; sampling RSS every %s", m.stall, rssEvery)
	stallEnd := time.Now().Add(m.stall)
	tick := time.NewTicker(rssEvery)
	defer tick.Stop()
	for {
		if err := r.exited(); err != nil {
			return fmt.Errorf("during the stall: %w", err)
		}
		rss, err := procStatus(r.pid(), "VmRSS")
		if err != nil {
			return fmt.Errorf("reading the relay's RSS: %w", err)
		}
		m.samples = append(m.samples, rss)
		if time.Now().After(stallEnd) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	m.stallMin, m.stallMax = minMax(m.samples)
	peak.sample()
	m.stallPeak = peak.peak
	m.refused = fault.Hits()
	// Missing metrics only cost a column, not the run.
	if v, err := r.metric(ctx, "relay_inflight_events"); err == nil {
		m.inflight = v
	}
	if v, err := r.metric(ctx, "relay_inflight_bytes"); err == nil {
		m.inflightBytes = v
	}
	fault.Remove()
	removed = true
	resumed := time.Now()
	logf("memory: stall over (RSS %d-%d MB, %d produce requests refused, %.0f events in flight); draining", m.stallMin>>20, m.stallMax>>20, m.refused, m.inflight)

	err = waitUntil(ctx, r, o.waitTimeout, 50*time.Millisecond, fmt.Sprintf("%d records in Kafka", m.events), func() (bool, error) {
		peak.sample()
		c, err := w.count(ctx)
		if err != nil {
			return false, err
		}
		m.delivered = c
		return c >= int64(m.events), nil
	})
	if err != nil {
		return fmt.Errorf("%w (%d of %d delivered)", err, m.delivered, m.events)
	}
	m.drainAfter = time.Since(resumed)
	peak.sample()
	m.peak = peak.peak
	if v, err := r.metric(ctx, "relay_reconnects_total"); err == nil {
		m.reconnects = v
	}
	logf("memory: drained in %s after the stall, peak RSS %d MB, %.0f pipeline restarts", m.drainAfter.Round(time.Millisecond), m.peak>>20, m.reconnects)
	return nil
}

// bulkBacklog writes n events server-side in batch-sized transactions: a
// client round trip per row would make the write take longer than the
// measurement.
func bulkBacklog(ctx context.Context, w *world, n, batch int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Same shape as eventGen: 1000 keys, each tied to one of the four
	// aggregate types, ~200-byte payloads.
	const sql = `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload)
		SELECT t, 'k-' || k, t || 'Created',
			jsonb_build_object('aggregateId', 'k-' || k, 'seq', g, 'amount', (g * 7919 % 1000000) / 100.0,
				'currency', 'EUR', 'status', 'created', 'note', $3::text)
		FROM generate_series($1::bigint, $2::bigint) g,
			LATERAL (SELECT (g * 7919) % 1000 AS k) key,
			LATERAL (SELECT ('{Order,Customer,Payment,Shipment}'::text[])[(g * 7919) % 1000 % 4 + 1] AS t) typ`
	for from := 1; from <= n; from += batch {
		to := min(from+batch-1, n)
		if _, err := conn.Exec(ctx, sql, from, to, payloadPad); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("writing the backlog took longer than %s: %w", timeout, err)
			}
			return fmt.Errorf("writing the backlog (events %d-%d): %w", from, to, err)
		}
	}
	return nil
}

func minMax(v []int64) (lo, hi int64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi = v[0], v[0]
	for _, x := range v[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}
