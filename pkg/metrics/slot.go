package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/logrepl"
)

var descSlotLag = prometheus.NewDesc("relay_slot_lag_bytes",
	"WAL Postgres retains for the slot: pg_current_wal_lsn() - confirmed_flush_lsn, sampled periodically.", nil, nil)

// slotLag holds the newest sample. It exports nothing until a sample
// succeeds, and stops exporting when sampling fails, so a dashboard shows a
// gap rather than a stale number.
type slotLag struct {
	mu    sync.Mutex
	valid bool
	bytes int64
}

func (s *slotLag) Describe(ch chan<- *prometheus.Desc) { ch <- descSlotLag }

func (s *slotLag) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	valid, v := s.valid, s.bytes
	s.mu.Unlock()
	if valid {
		ch <- prometheus.MustNewConstMetric(descSlotLag, prometheus.GaugeValue, float64(v))
	}
}

func (s *slotLag) set(v int64, valid bool) {
	s.mu.Lock()
	s.valid, s.bytes = valid, v
	s.mu.Unlock()
}

// errNoSlot means the slot does not exist (yet), or has no confirmed position
// yet: the relay creates it on start, so the sampler reports nothing rather
// than an error.
var errNoSlot = errors.New("replication slot does not exist")

// ReadSlotLag returns how many bytes of WAL Postgres retains for slot:
// pg_current_wal_lsn() - confirmed_flush_lsn, never negative.
func ReadSlotLag(ctx context.Context, conn *pgx.Conn, slot string) (int64, error) {
	var lag *int64
	err := conn.QueryRow(ctx, `SELECT greatest(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errNoSlot
	}
	if err != nil {
		return 0, err
	}
	if lag == nil {
		// A slot that has not reached a consistent point has no
		// confirmed_flush_lsn yet.
		return 0, errNoSlot
	}
	return *lag, nil
}

// SampleSlotLag samples relay_slot_lag_bytes every interval on a regular
// connection to pg until ctx is done. Failures are logged once per change of
// state and retried with a fresh connection on the next tick: a metrics
// problem must never stop the relay.
func (m *Metrics) SampleSlotLag(ctx context.Context, pg config.Postgres, interval time.Duration, log zerolog.Logger) {
	var conn *pgx.Conn
	defer func() { closeConn(conn) }()
	var lastErr string
	warned := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := m.sampleOnce(ctx, &conn, pg, interval)
		next := interval
		if errors.Is(err, errNoSlot) {
			// The relay creates the slot moments after start; a quick
			// retry on the open connection shows the lag from then on.
			next = min(interval, time.Second)
		}
		timer.Reset(next)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.slotLag.set(0, false)
			msg := pg.URL.RedactError(err)
			if msg != lastErr {
				ev := log.Warn()
				warned = !errors.Is(err, errNoSlot)
				if !warned {
					ev = log.Debug()
				}
				ev.Str("error", msg).Str("slot", pg.Slot).Msg("cannot sample slot lag for relay_slot_lag_bytes; retrying")
				lastErr = msg
			}
		case lastErr != "":
			if warned {
				log.Info().Str("slot", pg.Slot).Msg("sampling slot lag again")
			}
			lastErr, warned = "", false
		}
	}
}

func (m *Metrics) sampleOnce(ctx context.Context, conn **pgx.Conn, pg config.Postgres, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, max(timeout, 5*time.Second))
	defer cancel()
	if *conn == nil {
		c, err := logrepl.Connect(ctx, pg)
		if err != nil {
			return fmt.Errorf("connecting to postgres %s: %w", pg.URL.Redacted(), err)
		}
		*conn = c
	}
	lag, err := ReadSlotLag(ctx, *conn, pg.Slot)
	if err != nil && !errors.Is(err, errNoSlot) {
		// The connection may be broken; the next tick starts afresh.
		closeConn(*conn)
		*conn = nil
		return err
	}
	if err != nil {
		return err
	}
	m.slotLag.set(lag, true)
	return nil
}

// closeConn bounds the goodbye: the server may be unreachable.
func closeConn(c *pgx.Conn) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}
