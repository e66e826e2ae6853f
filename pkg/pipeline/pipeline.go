// Package pipeline runs logrepl -> decode -> sink with acks flowing back to the
// checkpoint tracker, and restarts the whole chain from the slot's confirmed
// position after retryable failures.
//
// Each attempt is built from scratch: a fresh tracker starting at the slot's
// confirmed LSN, a fresh producer and a fresh replication connection. Nothing
// unconfirmed survives an attempt, so a restart can only re-send the unacked
// tail (duplicates), never skip an event. Fatal errors end Run; a cancelled
// context starts a clean stop: finish the open transaction, wait for acks up to
// the drain timeout, confirm, return nil.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
	"github.com/relay-dev/relay/pkg/logrepl"
	"github.com/relay-dev/relay/pkg/sink"
)

// Observer receives pipeline events for metrics; every method may be called
// from several goroutines. A nil Observer is allowed.
type Observer interface {
	sink.Observer
	Reconnect(component string)
}

// Pipeline is a restartable relay pipeline.
type Pipeline struct {
	cfg     *config.Config
	log     zerolog.Logger
	obs     Observer
	stats   logrepl.Stats
	tracker atomic.Pointer[checkpoint.Tracker]
	// confirmed is the newest position an earlier attempt of this process
	// confirmed: every transaction before it is in Kafka.
	confirmed atomic.Uint64
	kafkaUp   atomic.Bool
	standby   atomic.Bool
}

// New returns a pipeline for cfg.
func New(cfg *config.Config, obs Observer, log zerolog.Logger) *Pipeline {
	return &Pipeline{cfg: cfg, obs: obs, log: log}
}

// Stream returns the replication stream's live statistics.
func (p *Pipeline) Stream() *logrepl.Stats { return &p.stats }

// Tracker returns the current attempt's tracker, or nil between attempts.
func (p *Pipeline) Tracker() *checkpoint.Tracker { return p.tracker.Load() }

// KafkaConnected reports whether the current attempt's producer connected.
func (p *Pipeline) KafkaConnected() bool { return p.kafkaUp.Load() }

// Standby reports whether the latest finished attempt found the slot held by
// another connection: this relay is a hot standby.
func (p *Pipeline) Standby() bool { return p.standby.Load() }

// Run runs until stop is cancelled (clean stop, nil) or a fatal error.
func (p *Pipeline) Run(stop context.Context) error {
	const minBackoff = 250 * time.Millisecond
	backoff := minBackoff
	for {
		started := time.Now()
		err := p.attempt(stop)
		p.standby.Store(errors.Is(err, logrepl.ErrSlotActive))
		if err == nil || (stop.Err() != nil && !fault.IsFatal(err)) {
			return nil
		}
		if fault.IsFatal(err) {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = minBackoff
		}
		ev := p.log.Warn()
		if errors.Is(err, logrepl.ErrSlotActive) {
			// Expected for a hot standby and for a crashed instance's
			// backend that Postgres has not reaped yet.
			ev = p.log.Info()
		}
		ev.Err(err).Dur("retry_in", backoff).Msg("pipeline stopped; restarting from the slot's confirmed position")
		select {
		case <-stop.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, p.cfg.Pipeline.MaxBackoff)
		if errors.Is(err, logrepl.ErrSlotActive) {
			// A standby polls the slot often enough to take over within
			// seconds of the active relay stopping; the poll costs one query.
			backoff = min(backoff, standbyPoll)
		}
	}
}

// standbyPoll caps the wait between a standby's looks at the slot.
const standbyPoll = 5 * time.Second

func (p *Pipeline) attempt(stop context.Context) error {
	defer p.tracker.Store(nil)
	defer p.kafkaUp.Store(false)
	start, err := logrepl.Prepare(stop, p.cfg.Postgres, p.cfg.Outbox, &p.log)
	if err != nil {
		if !errors.Is(err, logrepl.ErrSlotActive) { // waiting is not reconnecting
			p.reconnect("postgres")
		}
		return err
	}
	// PostgreSQL 15 and 16 do not write a logical slot's confirmed position
	// at shutdown, so after a Postgres restart the slot can be behind what
	// this process confirmed. Starting from our own position, which only
	// ever covers acked transactions, spares re-sending them.
	if c := pglogrepl.LSN(p.confirmed.Load()); c > start {
		p.log.Info().Stringer("slot", start).Stringer("from", c).
			Msg("slot is behind what this process confirmed (not yet persisted by Postgres); resuming from the confirmed position")
		start = c
	}
	tr := checkpoint.New(p.cfg.Pipeline.MaxInflightEvents, p.cfg.Pipeline.MaxInflightBytes, start)
	defer func() {
		if c := uint64(tr.Confirmed()); c > p.confirmed.Load() {
			p.confirmed.Store(c)
		}
	}()
	dec, err := decode.NewDecoder(p.cfg.Outbox, p.cfg.Messages, p.log)
	if err != nil {
		return fault.Fatal(err)
	}
	var sobs sink.Observer
	if p.obs != nil {
		sobs = p.obs
	}
	prod, err := sink.NewProducer(p.cfg.Kafka, tr, sobs, p.log)
	if err != nil {
		p.reconnect("kafka")
		return err
	}
	p.kafkaUp.Store(true)
	p.tracker.Store(tr)

	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	// Bound a clean stop even if the drain itself hangs (say, Postgres vanished
	// mid-drain): the drain timeout plus a grace period.
	grace := p.cfg.Pipeline.DrainTimeout + 10*time.Second
	unwatch := context.AfterFunc(stop, func() { time.AfterFunc(grace, cancelHard) })
	defer unwatch()

	g, gctx := errgroup.WithContext(hard)
	events := make(chan *decode.Event, 1024)
	st := &logrepl.Stream{PG: p.cfg.Postgres, Pipeline: p.cfg.Pipeline, Decoder: dec, Tracker: tr, Stats: &p.stats, Log: p.log, Tables: p.cfg.Outbox}
	g.Go(func() error {
		err := st.Run(gctx, stop, events)
		if err == nil && !tr.Idle() {
			// Drain timed out: what is still in flight is abandoned to the
			// next start, so the producer need not wait for it.
			cancelHard()
		}
		if err != nil {
			p.reconnect("postgres")
		}
		return err
	})
	g.Go(func() error {
		return logrepl.WatchPublication(gctx, stop, p.cfg.Postgres, p.cfg.Outbox, logrepl.PublicationCheckInterval, p.log)
	})
	g.Go(func() error {
		err := prod.Run(gctx, events)
		if err != nil && !errors.Is(err, context.Canceled) {
			p.reconnect("kafka")
			return fmt.Errorf("kafka: %w", err)
		}
		return err
	})
	return g.Wait()
}

func (p *Pipeline) reconnect(component string) {
	if p.obs != nil {
		p.obs.Reconnect(component)
	}
}
