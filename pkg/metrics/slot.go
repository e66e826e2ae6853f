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
	"WAL Postgres retains for the slot: pg_current_wal_lsn() - confirmed_flush_lsn, sampled when scraped.", nil, nil)

// slotLag samples the slot's lag when Prometheus collects it, on a
// connection of its own kept between scrapes. A periodic sampler would wake
// an idle relay for a query whether or not anybody scrapes; at scrape time the
// query costs what the scraper asked for. A sample younger than slotLagMaxAge
// is reused, so that several scrapers cost one query between them. It exports
// nothing until a sample succeeds, and nothing while sampling fails, so a
// dashboard shows a gap rather than a stale number.
type slotLag struct {
	mu     sync.Mutex
	sample func(context.Context) (int64, error) // nil until SampleSlotLag, and after its stop
	at     time.Time                            // of the newest sample, successful or not
	valid  bool
	bytes  int64
}

// slotLagMaxAge is how long a sample answers scrapes; slotLagTimeout bounds a
// sample, well inside Prometheus' default scrape timeout of 10s.
const (
	slotLagMaxAge  = 5 * time.Second
	slotLagTimeout = 3 * time.Second
)

func (s *slotLag) Describe(ch chan<- *prometheus.Desc) { ch <- descSlotLag }

func (s *slotLag) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	if s.sample != nil && time.Since(s.at) >= slotLagMaxAge {
		ctx, cancel := context.WithTimeout(context.Background(), slotLagTimeout)
		v, err := s.sample(ctx)
		cancel()
		s.at, s.valid, s.bytes = time.Now(), err == nil, v
	}
	valid, v := s.valid, s.bytes
	s.mu.Unlock()
	if valid {
		ch <- prometheus.MustNewConstMetric(descSlotLag, prometheus.GaugeValue, float64(v))
	}
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

// SampleSlotLag makes relay_slot_lag_bytes be sampled on a regular
// connection to pg whenever it is scraped, and returns the func that closes
// that connection. Failures are logged once per change of state and retried
// with a fresh connection at the next scrape: a metrics problem must never
// stop the relay.
func (m *Metrics) SampleSlotLag(pg config.Postgres, log zerolog.Logger) (stop func()) {
	var conn *pgx.Conn
	var lastErr string
	warned := false
	sample := func(ctx context.Context) (int64, error) {
		lag, err := readSlotLag(ctx, &conn, pg)
		switch {
		case err != nil:
			msg := pg.URL.RedactError(err)
			if msg != lastErr {
				ev := log.Warn()
				// The relay creates the slot moments after start.
				warned = !errors.Is(err, errNoSlot)
				if !warned {
					ev = log.Debug()
				}
				ev.Str("error", msg).Str("slot", pg.Slot).Msg("cannot sample slot lag for relay_slot_lag_bytes; retrying at the next scrape")
				lastErr = msg
			}
		case lastErr != "":
			if warned {
				log.Info().Str("slot", pg.Slot).Msg("sampling slot lag again")
			}
			lastErr, warned = "", false
		}
		return lag, err
	}
	m.slotLag.mu.Lock()
	m.slotLag.sample, m.slotLag.at = sample, time.Time{}
	m.slotLag.mu.Unlock()
	return func() {
		m.slotLag.mu.Lock()
		defer m.slotLag.mu.Unlock()
		m.slotLag.sample, m.slotLag.valid = nil, false
		closeConn(conn)
		conn = nil
	}
}

// readSlotLag samples the lag on *conn, connecting first if it is nil and
// dropping it after an error that may have broken it.
func readSlotLag(ctx context.Context, conn **pgx.Conn, pg config.Postgres) (int64, error) {
	if *conn == nil {
		c, err := logrepl.Connect(ctx, pg)
		if err != nil {
			return 0, fmt.Errorf("connecting to postgres %s: %w", pg.URL.Redacted(), err)
		}
		*conn = c
	}
	lag, err := ReadSlotLag(ctx, *conn, pg.Slot)
	if err != nil && !errors.Is(err, errNoSlot) {
		closeConn(*conn)
		*conn = nil
	}
	return lag, err
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
