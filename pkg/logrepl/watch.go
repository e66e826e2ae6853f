package logrepl

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/internal/netio"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

// PublicationCheckInterval is how often a streaming relay verifies its
// publication.
const PublicationCheckInterval = 10 * time.Second

// WatchPublication runs CheckPublication about every interval on a regular
// connection until ctx or stop is done, and returns its error once it is
// fatal. The walsender reports a dropped publication itself (an error, or on
// PostgreSQL 18 a warning the stream stops at); a table taken out of the
// publication, inserts no longer published or publish_via_partition_root
// turned off leave no trace in the stream, and this is how they are noticed.
// Trouble reaching Postgres is not the watcher's to report: the stream sees
// it too. It is logged at debug and retried at the next check.
//
// With beat (Stream.Beat) the checks ride on the stream's status updates:
// the first after four fifths of interval, or after two intervals without
// one. An idle stream reports every 10 s, and a check of its own in between
// would wake the relay from a cold start twice as often; a check right
// after a status update finds the caches warm. Without beat it checks every
// interval.
func WatchPublication(ctx, stop context.Context, pg config.Postgres, tables []config.Table, interval time.Duration, beat <-chan struct{}, log zerolog.Logger) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
	}()
	return watchLoop(ctx, stop, interval, beat, time.Now, func() error {
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, setupTimeout)
			defer cancel()
			if conn == nil {
				c, err := Connect(cctx, pg)
				if err != nil {
					return err
				}
				conn = c
			}
			return CheckPublication(cctx, conn, pg, tables)
		}()
		switch {
		case err == nil:
		case fault.IsFatal(err):
			if ctx.Err() != nil || stop.Err() != nil {
				return nil
			}
			return err
		default:
			log.Debug().Str("error", pg.URL.RedactError(err)).Msg("cannot verify the publication; retrying")
			if conn != nil {
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = conn.Close(cctx)
				cancel()
				conn = nil
			}
		}
		return nil
	})
}

// watchLoop calls check on the schedule WatchPublication describes until ctx
// or stop is done or check fails.
func watchLoop(ctx, stop context.Context, interval time.Duration, beat <-chan struct{}, now func() time.Time, check func() error) error {
	wait := interval
	if beat != nil {
		wait = 2 * interval
	}
	fallback := time.NewTimer(wait)
	defer fallback.Stop()
	last := now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop.Done():
			return nil
		case <-beat:
			t := now()
			if t.Sub(last) < interval*4/5 {
				continue
			}
			last = t
		case <-fallback.C:
			last = now()
		}
		fallback.Reset(wait)
		if err := check(); err != nil {
			return err
		}
	}
}

// Connect opens a regular connection for a query the relay repeats every
// few seconds. Its reads and writes go through netio, as the stream's do,
// so that the repeated query does not wake the runtime's monitor thread.
func Connect(ctx context.Context, pg config.Postgres) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(pg.URL.Reveal())
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = netio.DialFunc(cfg.DialFunc)
	return pgx.ConnectConfig(ctx, cfg)
}
