// Package pipeline wires the relay's stages for one attempt and restarts the
// attempt after retryable failures. The stages call each other as follows:
// logrepl.Stream reads the slot, decodes each message with decode.Decoder and
// reserves in-flight room in the checkpoint tracker before it hands an event
// to the sink over a channel; the sink acks events to the tracker; a progress
// writer here turns acked positions into progress records, and the stream
// confirms to Postgres only what a record vouches for. On a slot it just
// created, the attempt first publishes the rows already in the outbox tables
// (the initial snapshot); under exactly_once the transactional producer
// carries the progress record in each Kafka transaction instead.
//
// Each attempt reads the relay's progress record from Kafka, compares it with
// the slot (checkpoint.Decide: a slot that is missing or ahead of the record
// is fatal, never silently recreated), resets the process's one tracker to
// the start it chose, and builds a fresh producer and replication session.
// Nothing unconfirmed survives an attempt, so a restart can only re-send the
// unacked tail (duplicates), never skip an event. Fatal errors end Run; a
// cancelled context starts a clean stop: finish the open transaction, wait
// for acks and their record up to the drain timeout, confirm, return nil.
package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"github.com/relay-dev/relay/pkg/snapshot"
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
	version string
	log     zerolog.Logger
	obs     Observer
	stats   logrepl.Stats
	// tracker outlives attempts: it is the one holder of the acked and
	// confirmed positions, reset from the progress record by each attempt.
	tracker *checkpoint.Tracker
	kafkaUp atomic.Bool
	standby atomic.Bool
	// streamed is set once an attempt streamed from the slot: a slot missing
	// after that vanished under the running relay. Only Run's goroutine
	// touches it.
	streamed bool
	// snapState is what progress records say about the snapshot; nil
	// until an attempt decided it.
	snapState    atomic.Pointer[checkpoint.SnapshotProgress]
	snapProgress snapshot.Progress
}

// New returns a pipeline for cfg; version goes into progress records.
func New(cfg *config.Config, version string, obs Observer, log zerolog.Logger) *Pipeline {
	return &Pipeline{
		cfg: cfg, version: version, obs: obs, log: log,
		tracker: checkpoint.New(cfg.Pipeline.MaxInflightEvents, cfg.Pipeline.MaxInflightBytes, 0),
	}
}

// Stream returns the replication stream's live statistics.
func (p *Pipeline) Stream() *logrepl.Stats { return &p.stats }

// Tracker returns the tracker of acked and confirmed positions.
func (p *Pipeline) Tracker() *checkpoint.Tracker { return p.tracker }

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
		ev.Err(err).Dur("retry_in", backoff).Msg("pipeline stopped; restarting from the confirmed position (the newer of the slot and the progress record)")
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
	defer p.kafkaUp.Store(false)
	pg := p.cfg.Postgres
	slot, err := logrepl.Prepare(stop, pg, p.cfg.Outbox, &p.log)
	if err != nil {
		if !errors.Is(err, logrepl.ErrSlotActive) { // waiting is not reconnecting
			p.reconnect("postgres")
		}
		return err
	}
	rc, err := logrepl.Dial(stop, pg, p.cfg.Outbox)
	if err != nil {
		p.reconnect("postgres")
		return err
	}
	defer rc.Close()
	store, err := sink.OpenProgress(p.cfg.Kafka, true)
	if err != nil {
		p.reconnect("kafka")
		return err
	}
	defer store.Close()
	base := checkpoint.Record{
		Slot: pg.Slot, SystemID: rc.System.SystemID, Timeline: rc.System.Timeline,
		Version: p.version, Fingerprint: Fingerprint(p.cfg),
	}
	var sobs sink.Observer
	if p.obs != nil {
		sobs = p.obs
	}
	var txp *sink.TxnProducer
	if p.cfg.Kafka.ExactlyOnce() {
		// Initialising the transactional id fences every older producer
		// with it and aborts what they left open, so the record read next
		// is the newest that can ever be committed.
		if txp, err = p.newTxnProducer(base, sobs); err != nil {
			p.reconnect("kafka")
			return err
		}
	}
	start, partial, job, err := p.resume(stop, slot, rc, store, base)
	if err != nil {
		if txp != nil {
			txp.Close()
		}
		return err
	}
	if job != nil {
		defer job.conn.Close(context.Background())
	}
	p.tracker.Reset(start)

	dec, err := decode.NewDecoder(p.cfg.Outbox, p.cfg.Messages, p.log)
	if err != nil {
		if txp != nil {
			txp.Close()
		}
		return fault.Fatal(err)
	}
	var run func(context.Context, <-chan *decode.Event) error
	if txp != nil {
		txp.ResumeFrom(start, partial)
		txp.RecordSnapshot(p.snapState.Load)
		run = txp.Run
	} else {
		prod, err := sink.NewProducer(p.cfg.Kafka, p.tracker, sobs, p.log)
		if err != nil {
			p.reconnect("kafka")
			return err
		}
		run = prod.Run
	}
	p.kafkaUp.Store(true)

	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	// Bound a clean stop even if the drain itself hangs (say, Postgres vanished
	// mid-drain): the drain timeout plus a grace period.
	grace := p.cfg.Pipeline.DrainTimeout + 10*time.Second
	unwatch := context.AfterFunc(stop, func() { time.AfterFunc(grace, cancelHard) })
	defer unwatch()

	g, gctx := errgroup.WithContext(hard)
	events := make(chan *decode.Event, 1024)
	streamDone := make(chan struct{})
	beat := make(chan struct{}, 1)
	st := &logrepl.Stream{Conn: rc, PG: pg, Pipeline: p.cfg.Pipeline, Decoder: dec, Tracker: p.tracker, Resume: partial, Stats: &p.stats, Log: p.log, Tables: p.cfg.Outbox, Beat: beat}
	g.Go(func() error {
		defer close(streamDone)
		if job != nil {
			snapDec, err := decode.NewDecoder(p.cfg.Outbox, p.cfg.Messages, p.log)
			if err != nil {
				close(events)
				return fault.Fatal(err)
			}
			err = p.runSnapshot(gctx, stop, job, snapDec, store, base, events)
			if err != nil || stop.Err() != nil || p.cfg.Snapshot.Mode == config.SnapshotInitialOnly {
				// Nothing streams: the producer finishes what it holds.
				close(events)
				if stop.Err() != nil && !fault.IsFatal(err) {
					// As the stream's drain: what is not acked within the
					// drain timeout is abandoned (it is read again anyway).
					dctx, cancel := context.WithTimeout(gctx, p.cfg.Pipeline.DrainTimeout)
					_ = snapshot.WaitAcked(dctx, p.tracker)
					cancel()
					if !p.tracker.Idle() {
						cancelHard()
					}
					return nil
				}
				if err == nil {
					p.log.Info().Msg("snapshot.mode is initial_only: every row is in Kafka; exiting (the slot stays at its consistent point for a later relay run)")
				}
				return err
			}
		} else if p.cfg.Snapshot.Mode == config.SnapshotInitialOnly {
			close(events)
			p.log.Info().Msg("snapshot.mode is initial_only and there is nothing to read: exiting")
			return nil
		}
		p.streamed = true
		err := st.Run(gctx, stop, events)
		if err == nil && !p.tracker.Idle() {
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
		// Ends with the stream, which initial_only never starts.
		wctx, cancel := context.WithCancel(gctx)
		defer cancel()
		go func() {
			<-streamDone
			cancel()
		}()
		return logrepl.WatchPublication(wctx, stop, p.cfg.Postgres, p.cfg.Outbox, logrepl.PublicationCheckInterval, beat, p.log)
	})
	g.Go(func() error {
		err := run(gctx, events)
		if err != nil && !errors.Is(err, context.Canceled) {
			p.reconnect("kafka")
			return fmt.Errorf("kafka: %w", err)
		}
		return err
	})
	if txp == nil {
		// Exactly once, the progress record travels in each Kafka
		// transaction instead.
		g.Go(func() error { return p.writeProgress(gctx, stop, streamDone, store, base) })
	}
	err = g.Wait()
	if s := p.snapState.Load(); err == nil && stop.Err() == nil && txp != nil && job != nil && s != nil && s.Done {
		// initial_only, exactly once: the transactional producer committed
		// every snapshot row before Run returned, so the state may now be
		// recorded outside a transaction.
		rec := base
		rec.LSN, rec.Time, rec.Snapshot = p.tracker.Confirmed(), time.Now(), s
		if err := store.Save(context.WithoutCancel(stop), rec); err != nil {
			return err
		}
	}
	return err
}

// resume decides where this attempt streams from, creating the slot when
// that is what the progress record allows, and makes sure a progress record
// vouches for the start before anything is confirmed.
//
// A record that ends inside a transaction (exactly-once delivery splits
// large ones across Kafka transactions) also returns the part of it that is
// already in Kafka, for the stream to skip.
func (p *Pipeline) resume(ctx context.Context, slot logrepl.SlotState, rc *logrepl.ReplConn, store *sink.ProgressStore, base checkpoint.Record) (pglogrepl.LSN, *checkpoint.Partial, *snapshotJob, error) {
	pg := p.cfg.Postgres
	loaded, err := store.Load(ctx, pg.Slot, base.SystemID)
	if err != nil {
		p.reconnect("kafka")
		return 0, nil, nil, err
	}
	// A record written just before creating the slot vouches for nothing
	// yet: the slot, if it was created at all, is at its consistent point
	// and nothing was confirmed, so it is judged as a slot without record,
	// and its snapshot as interrupted.
	var prevSnap *checkpoint.SnapshotProgress
	if loaded.Found {
		prevSnap = loaded.Record.Snapshot
		if creating(loaded.Record) {
			loaded.Found = false
		}
	}
	in := checkpoint.Resume{
		Slot: pg.Slot, SlotExists: slot.Exists, SlotConfirmed: slot.Confirmed,
		SystemID: base.SystemID, Timeline: base.Timeline, Fingerprint: base.Fingerprint,
		Others: loaded.Others, Streamed: p.streamed, Recreate: pg.OnSlotLost == config.SlotLostRecreate,
	}
	if loaded.Found {
		in.Record = &loaded.Record
	}
	d, err := checkpoint.Decide(in)
	if err != nil {
		return 0, nil, nil, fault.Fatal(err)
	}
	for _, w := range d.Warnings {
		p.log.Warn().Str("slot", pg.Slot).Msg(w)
	}
	start := d.Start
	mode := p.cfg.Snapshot.Mode
	var job *snapshotJob
	var plan snapshot.Plan
	if d.CreateSlot {
		if !pg.CreateSlot {
			return 0, nil, nil, fault.Fatal(fmt.Errorf("replication slot %q does not exist and postgres.create_slot is false (SELECT pg_create_logical_replication_slot('%s', 'pgoutput'))", pg.Slot, pg.Slot))
		}
		plan = snapshot.Decide(mode, p.cfg.Outbox, true, nil)
		export := len(plan.Read) > 0
		if export {
			// Said before the slot exists, so that a crash right after
			// creating it cannot pass for a slot that never needed a
			// snapshot.
			rec := base
			rec.Time, rec.Snapshot = time.Now(), &checkpoint.SnapshotProgress{}
			if err := store.Save(ctx, rec); err != nil {
				p.reconnect("kafka")
				return 0, nil, nil, err
			}
		}
		created, err := rc.CreateSlot(ctx, pg.Slot, logrepl.SlotOptions{Failover: pg.SlotFailover, ExportSnapshot: export})
		if err != nil {
			p.reconnect("postgres")
			return 0, nil, nil, err
		}
		start = created.ConsistentPoint
		if export {
			// The snapshot must be imported before the next command on
			// the replication connection, which ends its export.
			conn, at, err := p.openSnapshot(ctx, created.SnapshotName)
			if err != nil {
				p.reconnect("postgres")
				return 0, nil, nil, err
			}
			job = &snapshotJob{tables: plan.Read, conn: conn, at: at, state: plan.State}
			p.log.Info().Str("slot", pg.Slot).Stringer("lsn", start).Str("snapshot", created.SnapshotName).
				Msg("created replication slot with an exported snapshot: the rows committed before its consistent point are published from the snapshot, those after from the stream")
		} else {
			p.log.Info().Str("slot", pg.Slot).Stringer("lsn", start).Msg("created replication slot; outbox rows committed from now on are relayed (snapshot.mode never)")
		}
	} else {
		plan = snapshot.Decide(mode, p.cfg.Outbox, false, prevSnap)
		if len(plan.Read) > 0 {
			conn, at, err := p.openSnapshot(ctx, "")
			if err != nil {
				p.reconnect("postgres")
				return 0, nil, nil, err
			}
			job = &snapshotJob{tables: plan.Read, conn: conn, at: at, state: plan.State}
			why := "outbox tables added to the config"
			if prevSnap != nil && !prevSnap.Done {
				why = "an interrupted snapshot"
			}
			p.log.Info().Str("slot", pg.Slot).Strs("tables", tableNames(plan.Read)).
				Msgf("snapshot of %s: reading under a fresh snapshot before streaming from the slot (rows committed since the slot's position are published twice)", why)
		}
	}
	state := plan.State
	p.snapState.Store(&state)
	if !loaded.Found || loaded.Record.LSN != start || !sameSnapshot(loaded.Record.Snapshot, &state) {
		rec := base
		rec.LSN, rec.Time, rec.Snapshot = start, time.Now(), &state
		if err := store.Save(ctx, rec); err != nil {
			if job != nil {
				job.conn.Close(context.WithoutCancel(ctx))
			}
			p.reconnect("kafka")
			return 0, nil, nil, err
		}
	}
	if slot.Exists && start > slot.Confirmed {
		// PostgreSQL 15 and 16 do not write a logical slot's confirmed
		// position at shutdown, and a promoted standby's synchronised copy
		// lags the old primary's; Postgres skips what commits before start.
		p.log.Info().Stringer("slot", slot.Confirmed).Stringer("from", start).
			Msg("slot is behind the progress record (its position was not persisted at a restart, or it is a standby's synchronised copy); resuming from the record")
	}
	var partial *checkpoint.Partial
	if loaded.Found && loaded.Record.LSN == start && loaded.Record.Partial != nil {
		partial = loaded.Record.Partial
		p.log.Info().Stringer("from", start).Stringer("commit_lsn", partial.CommitLSN).Int("events", partial.Events).
			Msg("the progress record ends inside a transaction: its first events are already in Kafka and will be skipped")
	}
	return start, partial, job, nil
}

// writeProgress makes acked positions durable: it writes a progress record
// when Acked moves and only then lets the tracker confirm the position. A
// record costs a produce round trip, as much as an event, so records are
// spaced: at least confirmGap apart, and while acks trickle in (fewer than
// recordEvents since the last record) up to recordMaxGap apart. A clean stop
// gets its last record at once. It ends when the stream has finished, whose
// drain waits for the last record.
func (p *Pipeline) writeProgress(ctx, stop context.Context, streamDone <-chan struct{}, store *sink.ProgressStore, base checkpoint.Record) error {
	tr := p.tracker
	written := tr.Confirmed()
	var last time.Time
	lastEvents := tr.Stats().AckedEvents
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	stopping := stop.Done()
	for {
		select {
		case <-tr.Progress():
		case <-streamDone:
			return nil
		case <-ctx.Done():
			return nil
		}
		for {
			wait, forMore := recordWait(time.Now(), last, tr.Stats().AckedEvents-lastEvents, stopping == nil)
			if wait <= 0 {
				break
			}
			var acks <-chan struct{}
			if forMore {
				// Waiting for enough events: the tracker says when
				// they are acked, from the producer's goroutine on a
				// thread already awake, where a poll timer would wake
				// one of its own and a wake-up per ack would cost one
				// per event.
				acks = tr.WhenAcked(lastEvents + recordEvents)
			}
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-acks:
				timer.Stop()
			case <-stopping:
				stopping = nil
				timer.Stop()
			case <-streamDone:
				return nil
			case <-ctx.Done():
				return nil
			}
		}
		acked := tr.Acked()
		if acked <= written {
			continue
		}
		rec := base
		rec.LSN, rec.Time, rec.Snapshot = acked, time.Now(), p.snapState.Load()
		events := tr.Stats().AckedEvents
		if err := store.Save(ctx, rec); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.reconnect("kafka")
			return err
		}
		last, written, lastEvents = time.Now(), acked, events
		tr.MarkDurable(acked)
	}
}

// newTxnProducer connects the exactly-once producer.
func (p *Pipeline) newTxnProducer(base checkpoint.Record, obs sink.Observer) (*sink.TxnProducer, error) {
	k := p.cfg.Kafka
	k.TransactionalID = p.cfg.TransactionalID()
	return sink.NewTxnProducer(k, p.cfg.Pipeline, base, p.tracker, obs, p.log)
}

// recordWait is how long the progress writer waits before writing a record,
// given the previous record's time and the events acked since: zero or less
// means now. Fewer than recordEvents events wait for more up to recordMaxGap
// (forMore: the caller also wakes when they are acked); enough of them, or a
// stop, wait out confirmGap.
func recordWait(now, last time.Time, events uint64, stopping bool) (wait time.Duration, forMore bool) {
	if stopping || events >= recordEvents {
		return last.Add(confirmGap).Sub(now), false
	}
	return last.Add(recordMaxGap).Sub(now), true
}

// confirmGap spaces progress records while acks move: a crash re-sends at
// most what was acked within it, and the record costs one small write per gap.
// At everyday rates fewer than recordEvents events are acked in a gap; then a
// record waits for recordEvents of them (counted as acks arrive), at most
// recordMaxGap. A crash re-sends about as many events either way, and a
// sidecar at a hundred events a second writes a few records a second instead
// of fifty.
const (
	confirmGap   = 20 * time.Millisecond
	recordEvents = 16
	recordMaxGap = time.Second
)

// Fingerprint identifies the publication and the table and message mapping,
// so that a relay taking over a slot with another mapping can say so.
func Fingerprint(cfg *config.Config) string {
	b, _ := json.Marshal(struct {
		Publication string
		Outbox      []config.Table
		Messages    []config.Message
	}{cfg.Postgres.Publication, cfg.Outbox, cfg.Messages})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (p *Pipeline) reconnect(component string) {
	if p.obs != nil {
		p.obs.Reconnect(component)
	}
}
