// Package logrepl owns the logical replication connection: it streams pgoutput
// from the relay's slot, hands decoded events downstream under the checkpoint
// tracker's in-flight bound, and reports the confirmable LSN back to Postgres.
//
// One goroutine owns the connection and writes every standby status update,
// because a write from elsewhere would race with the read deadlines that
// ReceiveMessage sets. While that goroutine waits for in-flight capacity or for
// the sink to take an event, it keeps sending status updates so the walsender
// never times the connection out under backpressure.
//
// Idle outboxes must not pin WAL: when nothing is in flight and no transaction
// is open, the position reported by keepalives (everything the walsender has
// decoded so far) is confirmed, so WAL written by other tables is released.
//
// The package also holds what the connection depends on: the start-up checks
// and the creation of publication and slot (Prepare; the Check functions are
// shared with relay check), the publication watch while streaming, and the
// slot created with an exported snapshot for the initial snapshot.
package logrepl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

type logger = *zerolog.Logger

// ErrSlotActive means another connection (a second relay, or the previous
// instance's backend not yet reaped) streams from the slot.
var ErrSlotActive = errors.New("replication slot is active for another connection")

// Stats are updated by the stream and read by metrics and health checks.
type Stats struct {
	ReceivedLSN  atomic.Uint64 // position of the newest WAL data received
	Streaming    atomic.Bool   // START_REPLICATION succeeded and the connection is up
	LastProgress atomic.Int64  // unix nanos of the newest message received, status sent or loop wake-up
}

// Stream is one replication session on Conn. Create it per connection attempt.
type Stream struct {
	Conn     *ReplConn
	PG       config.Postgres
	Pipeline config.Pipeline
	Decoder  *decode.Decoder
	Tracker  *checkpoint.Tracker
	// Resume, from an exactly-once progress record, names the first events
	// of a transaction that are already in Kafka: they are not sent again.
	Resume *checkpoint.Partial
	Stats  *Stats
	Log    zerolog.Logger
	// Tables are the outbox tables, named in the fix when the publication
	// goes missing.
	Tables []config.Table
	// Beat, if set, is signalled (without blocking) after every status
	// update, for periodic work that should share the stream's wake-ups
	// rather than wake an idle relay on its own: WatchPublication.
	Beat chan<- struct{}

	conn      *pgconn.PgConn
	catalog   *pgx.Conn // regular connection for catalog lookups, opened when first needed
	received  pglogrepl.LSN
	sentLSN   pglogrepl.LSN
	sentWrite pglogrepl.LSN
	sentAt    time.Time
	nextStat  time.Time

	// The read deadline is how the loop wakes up; nudges move it from other
	// goroutines, so every change to it but the hard stop's goes through mu.
	mu     sync.Mutex
	armed  time.Time // the deadline set for the next read
	nudged bool      // a nudge came since the loop last looked
	quiet  bool      // the loop reads no more: nudges leave the deadline alone

	// waiting is set while the stream waits for the sink instead of reading:
	// it cannot see the walsender's requests for a reply then, so it reports
	// at every status interval, changed or not.
	waiting bool
}

// reportGap spaces the reports of durable positions: the first after a
// quiet spell goes at once, later ones at most every gap (or at the status
// interval if that is sooner). Confirming the slot is only about the WAL
// Postgres keeps, since a restart resumes from the progress record when the
// slot is behind it, so a second's lag costs nothing; reporting every
// progress record instead, up to 50 a second under load, cost the relay and
// its walsender a write and a wake-up each.
const reportGap = time.Second

// idleStatus is how often an unchanged position is reported all the same
// (pg_recvlogical's default status interval). A status is the walsender's
// sign that the relay lives; without one it asks for a reply at half its
// wal_sender_timeout, which the relay answers at once. Reporting the same
// position every status interval would cost an idle relay and its walsender
// a write and a wake-up each, every second.
const idleStatus = 10 * time.Second

// setupTimeout bounds connecting and the start-up checks.
const setupTimeout = 30 * time.Second

// Run streams until stop is done (then it finishes the open transaction, waits
// up to the drain timeout for in-flight events to be acked, confirms and
// returns nil) or until hard is done or an error occurs. It closes out on return.
func (s *Stream) Run(hard, stop context.Context, out chan<- *decode.Event) error {
	defer close(out)
	if s.Stats == nil {
		s.Stats = &Stats{}
	}
	conn := s.Conn.conn
	s.conn = conn
	s.Decoder.ResolvePartitions(s.ancestors)
	defer s.closeCatalog()
	defer s.Stats.Streaming.Store(false)

	args := []string{"proto_version '1'", publicationNames(s.PG.Publication), "messages 'true'"}
	// Postgres streams from the later of this and the slot's confirmed
	// position, skipping transactions that commit before it.
	start := s.Tracker.Confirmed()
	err := pglogrepl.StartReplication(hard, conn, s.PG.Slot, start, pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" {
			return fmt.Errorf("%w: %s", ErrSlotActive, pgErr.Message)
		}
		return classify(fmt.Errorf("START_REPLICATION on slot %q: %w", s.PG.Slot, err), err)
	}
	s.Stats.Streaming.Store(true)
	s.catchUpWithSlot(hard)
	s.received = s.Tracker.Confirmed()
	s.Stats.ReceivedLSN.Store(uint64(s.received))
	s.touch()
	s.Log.Info().Str("slot", s.PG.Slot).Stringer("from", s.Tracker.Confirmed()).Msg("streaming from replication slot")

	// Cancelling hard must interrupt a blocked read, which no longer watches a
	// context: an expired deadline does that.
	stopRead := context.AfterFunc(hard, func() { _ = conn.Conn().SetReadDeadline(time.Unix(1, 0)) })
	defer stopRead()
	// With nothing to report the loop sleeps up to idleStatus: a position
	// made durable elsewhere and a clean stop wake it instead.
	s.Tracker.OnDurable(s.nudge)
	defer s.Tracker.OnDurable(nil)
	stopNudge := context.AfterFunc(stop, s.nudge)
	defer stopNudge()
	inTxn := false
	cursor := checkpoint.NewCursor(s.Resume)
	for {
		if stop.Err() != nil && !inTxn {
			return s.drain(hard)
		}
		if err := s.maybeStatus(false); err != nil {
			return err
		}
		// A read deadline on the socket instead of a deadline context per
		// message: pgconn starts a watcher goroutine for every cancellable
		// context, which at tens of thousands of messages a second costs more
		// than decoding them.
		if !s.arm(s.wake()) {
			continue
		}
		if hard.Err() != nil {
			return hard.Err()
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if s.Conn.gap != nil {
			return s.Conn.gap
		}
		if err != nil {
			if hard.Err() != nil {
				return hard.Err()
			}
			if pgconn.Timeout(err) {
				// The loop's own wake-up or a nudge: with nothing to report
				// it sends nothing, but it is alive.
				s.expired()
				s.touch()
				continue
			}
			return classify(fmt.Errorf("replication stream: %w", err), err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing keepalive: %w", err)
				}
				if !inTxn {
					// Everything the walsender decoded before this keepalive
					// has reached us; with nothing in flight it is safe to
					// confirm, which is what releases WAL of busy other tables.
					s.Tracker.AdvanceIdle(ka.ServerWALEnd)
				}
				if err := s.maybeStatus(ka.ReplyRequested); err != nil {
					return err
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("parsing XLogData: %w", err)
				}
				// pgoutput stamps a change with its record's LSN and a commit
				// with the commit's end, which is what the tracker confirms
				// once the transaction is in Kafka (as pg_recvlogical
				// counts). Adding the message's length would put received
				// past every confirmable position after each commit.
				if xld.WALStart > s.received {
					s.received = xld.WALStart
					s.Stats.ReceivedLSN.Store(uint64(s.received))
				}
				res, err := s.Decoder.Decode(xld.WALData)
				if errors.Is(err, errCatalog) {
					return fmt.Errorf("decoding WAL at %s: %w", xld.WALStart, err)
				}
				if err != nil {
					return fault.Fatal(fmt.Errorf("decoding WAL at %s: %w", xld.WALStart, err))
				}
				switch res.Kind {
				case decode.KindBegin:
					inTxn = true
					cursor.Begin(res.LSN)
				case decode.KindCommit:
					inTxn = false
					s.Tracker.Commit(res.LSN, res.CommitTime)
				case decode.KindEvent:
					pos, skip := cursor.Next()
					if skip {
						if cursor.Skipped() == s.Resume.Events {
							s.Log.Info().Stringer("commit_lsn", pos.Txn).Int("events", s.Resume.Events).
								Msg("resumed inside a transaction: skipped its events already committed to Kafka")
						}
						break
					}
					res.Event.Txn, res.Event.TxnIndex = pos.Txn, pos.Index
					if err := s.handOver(hard, res.Event, out); err != nil {
						return err
					}
				}
			}
			s.touch()
		case *pgproto3.ErrorResponse:
			pgErr := pgconn.ErrorResponseToPgError(msg)
			if publicationMissing(pgErr) {
				// PostgreSQL 15 to 17 fail on the first change after the
				// drop, and again at the same point after every restart.
				return publicationGapError(s.PG, s.Tables, fmt.Sprintf("the walsender failed with %q%s: the publication was dropped, and changes after that point of the WAL cannot be decoded through it",
					pgErr.Message, where(pgErr.Where)))
			}
			return classify(fmt.Errorf("replication stream: %w", pgErr), pgErr)
		case *pgproto3.CopyDone:
			return errors.New("replication stream: server ended the copy")
		}
	}
}

// handOver reserves in-flight capacity for ev and passes it to the sink,
// keeping status updates flowing while it waits.
func (s *Stream) handOver(hard context.Context, ev *decode.Event, out chan<- *decode.Event) error {
	size := ev.Size()
	for {
		seq, ok := s.Tracker.TryReserve(size)
		if ok {
			ev.Seq = seq
			break
		}
		if err := s.wait(hard, s.Tracker.Space()); err != nil {
			return err
		}
	}
	for {
		select {
		case out <- ev:
			return nil
		default:
		}
		timer := time.NewTimer(time.Until(s.wake()))
		select {
		case out <- ev:
			timer.Stop()
			return nil
		case <-timer.C:
			if err := s.maybeStatus(false); err != nil {
				return err
			}
		case <-hard.Done():
			timer.Stop()
			return hard.Err()
		}
	}
}

// wait blocks until ch fires, sending status updates when they are due.
func (s *Stream) wait(hard context.Context, ch <-chan struct{}) error {
	s.waiting = true
	defer func() { s.waiting = false }()
	timer := time.NewTimer(time.Until(s.wake()))
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-timer.C:
		return s.maybeStatus(false)
	case <-hard.Done():
		return hard.Err()
	}
}

// drain waits for every event handed over to be acked, bounded by the drain
// timeout, then reports the final position.
func (s *Stream) drain(hard context.Context) error {
	s.hush()
	deadline := time.Now().Add(s.Pipeline.DrainTimeout)
	s.Log.Info().Int("inflight", s.Tracker.Stats().InflightEvents).Msg("stopping: waiting for in-flight events to be acknowledged")
	// Acked events are confirmable once their progress record is in Kafka,
	// which the progress writer does promptly: wait for that too, or the
	// next start would send them again.
	for !s.Tracker.Idle() || s.Tracker.Confirmed() != s.Tracker.Acked() {
		if time.Now().After(deadline) {
			st := s.Tracker.Stats()
			s.Log.Warn().Int("inflight", st.InflightEvents).Dur("drain_timeout", s.Pipeline.DrainTimeout).
				Msg("drain timeout: unacknowledged events will be sent again after restart")
			break
		}
		dctx, cancel := context.WithDeadline(hard, deadline)
		err := s.wait(dctx, s.Tracker.Space())
		cancel()
		if err != nil && hard.Err() != nil {
			return hard.Err()
		}
	}
	if err := s.sendStatus(false); err != nil {
		return err
	}
	// CopyDone makes the walsender process our final status before it ends
	// the stream, so the confirmed position is in place when we return.
	// The loop's read deadline may already have passed; give the exchange
	// its own.
	_ = s.conn.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := pglogrepl.SendStandbyCopyDone(context.Background(), s.conn); err != nil {
		s.Log.Debug().Err(err).Msg("ending replication stream")
	}
	s.Log.Info().Stringer("confirmed", s.Tracker.Confirmed()).Msg("stopped cleanly")
	return nil
}

// wake is when the stream must next look at what to report: a gap after the
// last report while a durable position waits to be reported, the regular
// status interval while the received position moves, and otherwise the idle
// sign of life. A position that becomes durable while the stream waits on
// the socket nudges it (Tracker.OnDurable), and is reported a gap after the
// previous report; waking every gap while events are in flight would cost a
// timer and a wake-up per gap for positions that are not yet durable.
func (s *Stream) wake() time.Time {
	confirmed := s.Tracker.Confirmed()
	if confirmed != s.sentLSN {
		// Past already means due: the loop reports at once, which moves
		// sentLSN, so a past wake-up cannot repeat.
		return minTime(s.sentAt.Add(reportGap), s.nextStat)
	}
	if s.waiting || s.writePosition(confirmed) != s.sentWrite {
		return s.nextStat
	}
	return s.sentAt.Add(max(s.Pipeline.StatusInterval, idleStatus))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// arm sets the read deadline to at for the next read, unless a nudge came
// since the loop last looked: then it reports false, and the loop looks
// again. A nudge that comes after arm moves the deadline it set.
func (s *Stream) arm(at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nudged {
		s.nudged = false
		return false
	}
	if !at.Equal(s.armed) {
		s.armed = at
		_ = s.conn.Conn().SetReadDeadline(at)
	}
	return true
}

// expired notes that the deadline has passed, so that arm sets it again.
func (s *Stream) expired() {
	s.mu.Lock()
	s.armed = time.Time{}
	s.mu.Unlock()
}

// nudge makes the loop look at the confirmable position and the stop context
// now rather than at its next wake-up.
func (s *Stream) nudge() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quiet {
		return
	}
	s.nudged = true
	s.armed = time.Time{}
	_ = s.conn.Conn().SetReadDeadline(time.Unix(1, 0))
}

// hush stops nudges from touching the read deadline, which the drain sets
// itself for its last exchange.
func (s *Stream) hush() {
	s.mu.Lock()
	s.quiet = true
	s.mu.Unlock()
}

func (s *Stream) maybeStatus(force bool) error {
	if !force && !s.statusDue(time.Now()) {
		return nil
	}
	return s.sendStatus(false)
}

// statusDue says whether a status update is due at now; wake is when it
// next will be.
func (s *Stream) statusDue(now time.Time) bool {
	confirmed := s.Tracker.Confirmed()
	switch {
	case confirmed != s.sentLSN:
		return !now.Before(s.nextStat) || now.Sub(s.sentAt) >= reportGap
	case now.Before(s.nextStat):
		return false
	default:
		// An unchanged position is reported only as a sign of life.
		return s.waiting || s.writePosition(confirmed) != s.sentWrite || now.Sub(s.sentAt) >= max(s.Pipeline.StatusInterval, idleStatus)
	}
}

// writePosition is what the relay has received, reported as written: never
// behind what it confirms.
func (s *Stream) writePosition(confirmed pglogrepl.LSN) pglogrepl.LSN {
	return max(s.received, confirmed)
}

func (s *Stream) sendStatus(reply bool) error {
	if s.Conn.gap != nil {
		// Past the gap nothing may be confirmed, not even what was acked
		// before it: the position reported by keepalives may lie beyond it.
		return s.Conn.gap
	}
	confirmed := s.Tracker.Confirmed()
	write := s.writePosition(confirmed)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: confirmed,
		WALApplyPosition: confirmed,
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("sending standby status: %w", err)
	}
	s.sentLSN, s.sentWrite = confirmed, write
	s.sentAt = time.Now()
	s.nextStat = s.sentAt.Add(s.Pipeline.StatusInterval)
	s.touch()
	if s.Beat != nil {
		select {
		case s.Beat <- struct{}{}:
		default:
		}
	}
	return nil
}

func (s *Stream) touch() { s.Stats.LastProgress.Store(time.Now().UnixNano()) }

// errCatalog marks a failed catalog lookup: connection trouble, retried.
var errCatalog = errors.New("looking up the catalog")

// ancestors returns the partition ancestors of schema.name, nearest first,
// for the decoder to recognise rows that arrive under a partition's name.
func (s *Stream) ancestors(schema, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.catalog == nil {
		c, err := pgx.Connect(ctx, s.PG.URL.Reveal())
		if err != nil {
			return nil, fmt.Errorf("%w: connecting to postgres %s: %s", errCatalog, s.PG.URL.Redacted(), s.PG.URL.RedactError(err))
		}
		s.catalog = c
	}
	// pg_partition_ancestors lists the relation itself first, then its
	// parents up to the root; nothing for a table that is no partition.
	rows, err := s.catalog.Query(ctx, `SELECT an.nspname || '.' || ac.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
			pg_partition_ancestors(c.oid) WITH ORDINALITY AS a(relid, depth)
			JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.relid <> c.oid
		ORDER BY a.depth`, schema, name)
	var anc []string
	if err == nil {
		anc, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		s.closeCatalog()
		return nil, fmt.Errorf("%w: partition ancestors of %s.%s: %w", errCatalog, schema, name, err)
	}
	return anc, nil
}

func (s *Stream) closeCatalog() {
	if s.catalog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.catalog.Close(ctx)
		cancel()
		s.catalog = nil
	}
}

// publicationMissing recognises the walsender's error for a publication that
// does not exist at the point of the WAL being decoded.
func publicationMissing(err *pgconn.PgError) bool {
	return err.Code == "42704" && strings.HasPrefix(err.Message, "publication ") && strings.HasSuffix(err.Message, " does not exist")
}

func where(w string) string {
	if w == "" {
		return ""
	}
	return "; " + w
}

// catchUpWithSlot moves the tracker to the slot's confirmed position as read
// now that this connection holds the slot. The position the tracker started
// from was read before connecting, and another instance (the active relay,
// for a standby taking over) may have confirmed further since: reporting the
// older position would move the slot back and re-send events after a crash.
// Failing to read only keeps the older, still safe, position.
func (s *Stream) catchUpWithSlot(hard context.Context) {
	ctx, cancel := context.WithTimeout(hard, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.PG.URL.Reveal())
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if st, err := ReadSlot(ctx, conn, s.PG.Slot); err == nil && st.Exists {
		// The slot is only ever confirmed up to a progress record, so its
		// position is durable by construction.
		s.Tracker.AdvanceIdle(st.Confirmed)
		s.Tracker.MarkDurable(st.Confirmed)
	}
}
