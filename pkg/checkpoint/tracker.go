// Package checkpoint decides which WAL position the relay may confirm to
// Postgres: the end of the newest transaction whose events, and all earlier
// events, Kafka has acknowledged.
//
// The model: every event handed to the producer gets a sequence number in WAL
// order (Reserve). Each commit marks a boundary: "all events reserved so far
// belong to transactions at or before this LSN" (Commit). Acks arrive in any
// order across partitions (Ack); the tracker keeps the contiguous acked prefix
// of sequence numbers, the watermark, and a commit becomes confirmable once the
// watermark passes its boundary. Confirming anything later could let Postgres
// discard a transaction whose events Kafka never stored.
//
// The tracker is also the in-flight bound: Reserve refuses while the number or
// bytes of unacknowledged events is at the cap, which is what applies
// backpressure to WAL reading. A single event larger than the byte cap is
// admitted when nothing else is in flight, so no event can wedge the pipeline.
//
// Acked is not yet confirmable: the slot is confirmed only up to the newest
// position a progress record in Kafka vouches for (MarkDurable), so that after
// any crash the relay's own record is at or ahead of the slot. A slot found
// ahead of the record was moved by something else; see Record.
//
// One tracker lives as long as the process. Each pipeline attempt calls Reset,
// which abandons what was in flight (it was not confirmed, so the next
// attempt re-reads it from the slot); sequence numbers keep increasing across
// attempts, so a late ack from an abandoned producer matches nothing.
//
// All methods are safe for concurrent use: the replication goroutine reserves
// and commits, the producer's ack goroutine acks, the progress writer reads
// Acked and marks positions durable.
package checkpoint

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// Tracker tracks in-flight events and the confirmable LSN. The zero value is
// not usable; see New.
type Tracker struct {
	maxEvents int
	maxBytes  int

	mu            sync.Mutex
	next          uint64 // sequence number of the next reserved event
	low           uint64 // every sequence number below low is acked
	done          []bool // ring indexed by seq % maxEvents: acked above the watermark
	sizes         []int
	inflightBytes int
	marks         []mark // commit boundaries not yet passed by the watermark, oldest first
	head          int
	acked         pglogrepl.LSN // every transaction up to here is in Kafka
	durable       pglogrepl.LSN // a progress record in Kafka vouches for this position
	lastCommit    time.Time     // commit time of the newest acked transaction
	ackedEvents   uint64
	attempt       int

	onDurable func() // called, under mu, when the durable position moves

	space    chan struct{} // signalled after acks free capacity or change what is confirmable
	progress chan struct{} // signalled when Acked moves
	countAt  uint64        // signal counted once ackedEvents reaches it; 0: not armed
	counted  chan struct{}
}

type mark struct {
	end    uint64 // events with seq < end precede this commit
	lsn    pglogrepl.LSN
	commit time.Time
}

// New returns a tracker bounding in-flight events to maxEvents and maxBytes,
// starting from position start, which is taken as durable.
func New(maxEvents, maxBytes int, start pglogrepl.LSN) *Tracker {
	if maxEvents < 1 {
		maxEvents = 1
	}
	return &Tracker{
		maxEvents: maxEvents,
		maxBytes:  maxBytes,
		done:      make([]bool, maxEvents),
		sizes:     make([]int, maxEvents),
		acked:     start,
		durable:   start,
		space:     make(chan struct{}, 1),
		progress:  make(chan struct{}, 1),
		counted:   make(chan struct{}, 1),
	}
}

// Reset abandons every event in flight and every pending boundary and starts
// again from start, a position that is durable (the progress record's or the
// slot's). It never moves the durable position back: start below it is
// raised to it.
func (t *Tracker) Reset(start pglogrepl.LSN) pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.low = t.next
	t.inflightBytes = 0
	t.marks, t.head = t.marks[:0], 0
	t.durable = max(t.durable, start)
	t.acked = t.durable
	t.lastCommit = time.Time{}
	t.attempt++
	return t.durable
}

// TryReserve assigns the next sequence number to an event of size bytes, or
// reports false when the in-flight cap is reached; wait on Space and retry.
func (t *Tracker) TryReserve(size int) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	inflight := t.next - t.low
	if inflight >= uint64(t.maxEvents) || (inflight > 0 && t.inflightBytes+size > t.maxBytes) { //nolint:gosec // G115: New makes maxEvents >= 1
		return 0, false
	}
	seq := t.next
	t.next++
	i := seq % uint64(t.maxEvents) //nolint:gosec // G115: New makes maxEvents >= 1
	t.done[i] = false
	t.sizes[i] = size
	t.inflightBytes += size
	return seq, true
}

// Space is signalled when acks may have freed capacity or moved the
// confirmable position. It has one buffered slot: meant for a single waiter.
func (t *Tracker) Space() <-chan struct{} { return t.space }

// Ack records that Kafka stored event seq. Acking an unknown or already acked
// sequence number is a no-op, so a duplicate callback cannot move the watermark.
func (t *Tracker) Ack(seq uint64) {
	t.mu.Lock()
	if seq < t.low || seq >= t.next {
		t.mu.Unlock()
		return
	}
	n := uint64(t.maxEvents) //nolint:gosec // G115: New makes maxEvents >= 1
	t.done[seq%n] = true
	moved, advanced := false, false
	for t.low < t.next && t.done[t.low%n] {
		i := t.low % n
		t.done[i] = false
		t.inflightBytes -= t.sizes[i]
		t.low++
		t.ackedEvents++
		moved = true
	}
	reached := false
	if moved {
		advanced = t.passMarks()
		if t.countAt != 0 && t.ackedEvents >= t.countAt {
			t.countAt, reached = 0, true
		}
	}
	t.mu.Unlock()
	if moved {
		signal(t.space)
	}
	if reached {
		signal(t.counted)
	}
	if advanced {
		signal(t.progress)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// passMarks moves Acked past every commit whose events are all acked and
// reports whether it moved. Caller holds mu.
func (t *Tracker) passMarks() bool {
	moved := false
	for t.head < len(t.marks) && t.marks[t.head].end <= t.low {
		m := t.marks[t.head]
		if m.lsn > t.acked {
			t.acked = m.lsn
			t.lastCommit = m.commit
			moved = true
		}
		t.head++
	}
	if t.head == len(t.marks) {
		t.marks, t.head = t.marks[:0], 0
	} else if t.head > 1024 && t.head*2 > len(t.marks) {
		t.marks = append(t.marks[:0], t.marks[t.head:]...)
		t.head = 0
	}
	return moved
}

// Commit records a transaction boundary: every event reserved so far belongs to
// a transaction ending at or before endLSN.
func (t *Tracker) Commit(endLSN pglogrepl.LSN, commitTime time.Time) {
	t.mu.Lock()
	// A commit with no new events since the previous boundary only moves that
	// boundary's LSN, so boundaries never outnumber in-flight events.
	if k := len(t.marks); k > t.head && t.marks[k-1].end == t.next {
		t.marks[k-1].lsn, t.marks[k-1].commit = endLSN, commitTime
		t.mu.Unlock()
		return
	}
	t.marks = append(t.marks, mark{end: t.next, lsn: endLSN, commit: commitTime})
	advanced := t.passMarks()
	t.mu.Unlock()
	if advanced {
		signal(t.progress)
	}
}

// AdvanceIdle confirms lsn (typically the server's WAL end from a keepalive)
// when nothing is in flight and no boundary is pending. The caller must only
// pass a position it has received everything before and must not be inside a
// transaction. It reports whether the position moved.
func (t *Tracker) AdvanceIdle(lsn pglogrepl.LSN) bool {
	t.mu.Lock()
	if t.low != t.next || t.head != len(t.marks) || lsn <= t.acked {
		t.mu.Unlock()
		return false
	}
	t.acked = lsn
	t.lastCommit = time.Time{}
	t.mu.Unlock()
	signal(t.progress)
	return true
}

// Acked returns the newest position whose transactions, and all earlier
// ones, Kafka has acknowledged: what a progress record may vouch for next.
func (t *Tracker) Acked() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked
}

// Progress is signalled when Acked moves; meant for the single goroutine
// that writes progress records.
func (t *Tracker) Progress() <-chan struct{} { return t.progress }

// WhenAcked returns a channel signalled once n events in all have been
// acked since the process started (Stats.AckedEvents), at once if they have.
// It replaces the previous call's request, and a signal that call left
// unread is dropped. It lets the progress writer wait for a count without
// waking on every ack; meant for that single goroutine.
func (t *Tracker) WhenAcked(n uint64) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.counted:
	default:
	}
	if t.ackedEvents >= n {
		t.countAt = 0
		t.counted <- struct{}{}
	} else {
		t.countAt = n
	}
	return t.counted
}

// MarkDurable records that a progress record for lsn is in Kafka. Positions
// beyond Acked are refused (a record can only vouch for acked events), and
// the durable position never moves back.
func (t *Tracker) MarkDurable(lsn pglogrepl.LSN) {
	t.mu.Lock()
	moved := lsn > t.durable && lsn <= t.acked
	if moved {
		t.durable = lsn
		if t.onDurable != nil {
			t.onDurable()
		}
	}
	t.mu.Unlock()
	if moved {
		signal(t.space)
	}
}

// OnDurable makes f be called whenever the durable position moves, or stops
// that with nil. f runs with the tracker locked, so it must be quick and not
// call back into it; once OnDurable returns, the f it replaced is no longer
// running. The stream uses it to report a position made durable while it
// waits on its socket, which no channel can interrupt.
func (t *Tracker) OnDurable(f func()) {
	t.mu.Lock()
	t.onDurable = f
	t.mu.Unlock()
}

// Confirmed returns the newest LSN that may be reported to Postgres as
// flushed: the durable position.
func (t *Tracker) Confirmed() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.durable
}

// Stats is a snapshot for metrics and health.
type Stats struct {
	InflightEvents int
	InflightBytes  int
	Acked          pglogrepl.LSN
	Confirmed      pglogrepl.LSN
	// LastCommit is the commit time of the newest acked transaction; zero
	// once the tracker is idle and caught up.
	LastCommit  time.Time
	AckedEvents uint64 // events acked since the process started
	Attempt     int    // how many times Reset was called
}

// Stats returns a consistent snapshot.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{
		InflightEvents: int(t.next - t.low), //nolint:gosec // G115: at most maxEvents
		InflightBytes:  t.inflightBytes,
		Acked:          t.acked,
		Confirmed:      t.durable,
		LastCommit:     t.lastCommit,
		AckedEvents:    t.ackedEvents,
		Attempt:        t.attempt,
	}
}

// Idle reports whether no event is in flight.
func (t *Tracker) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low == t.next
}
