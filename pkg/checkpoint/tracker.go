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
// All methods are safe for concurrent use: the replication goroutine reserves
// and commits, the producer's ack goroutine acks.
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
	acked         []bool // ring indexed by seq % maxEvents
	sizes         []int
	inflightBytes int
	marks         []mark // commit boundaries not yet passed by the watermark, oldest first
	head          int
	confirmed     pglogrepl.LSN
	lastCommit    time.Time // commit time of the newest confirmable transaction

	space chan struct{} // signalled after acks free capacity or change confirmable
}

type mark struct {
	end    uint64 // events with seq < end precede this commit
	lsn    pglogrepl.LSN
	commit time.Time
}

// New returns a tracker bounding in-flight events to maxEvents and maxBytes,
// starting from the slot's confirmed position start.
func New(maxEvents, maxBytes int, start pglogrepl.LSN) *Tracker {
	if maxEvents < 1 {
		maxEvents = 1
	}
	return &Tracker{
		maxEvents: maxEvents,
		maxBytes:  maxBytes,
		acked:     make([]bool, maxEvents),
		sizes:     make([]int, maxEvents),
		confirmed: start,
		space:     make(chan struct{}, 1),
	}
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
	t.acked[i] = false
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
	t.acked[seq%n] = true
	moved := false
	for t.low < t.next && t.acked[t.low%n] {
		i := t.low % n
		t.acked[i] = false
		t.inflightBytes -= t.sizes[i]
		t.low++
		moved = true
	}
	if moved {
		t.passMarks()
	}
	t.mu.Unlock()
	if moved {
		select {
		case t.space <- struct{}{}:
		default:
		}
	}
}

// passMarks makes every commit whose events are all acked confirmable.
// Caller holds mu.
func (t *Tracker) passMarks() {
	for t.head < len(t.marks) && t.marks[t.head].end <= t.low {
		m := t.marks[t.head]
		if m.lsn > t.confirmed {
			t.confirmed = m.lsn
			t.lastCommit = m.commit
		}
		t.head++
	}
	if t.head == len(t.marks) {
		t.marks, t.head = t.marks[:0], 0
	} else if t.head > 1024 && t.head*2 > len(t.marks) {
		t.marks = append(t.marks[:0], t.marks[t.head:]...)
		t.head = 0
	}
}

// Commit records a transaction boundary: every event reserved so far belongs to
// a transaction ending at or before endLSN.
func (t *Tracker) Commit(endLSN pglogrepl.LSN, commitTime time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A commit with no new events since the previous boundary only moves that
	// boundary's LSN, so boundaries never outnumber in-flight events.
	if k := len(t.marks); k > t.head && t.marks[k-1].end == t.next {
		t.marks[k-1].lsn, t.marks[k-1].commit = endLSN, commitTime
		return
	}
	t.marks = append(t.marks, mark{end: t.next, lsn: endLSN, commit: commitTime})
	t.passMarks()
}

// AdvanceIdle confirms lsn (typically the server's WAL end from a keepalive)
// when nothing is in flight and no boundary is pending. The caller must only
// pass a position it has received everything before and must not be inside a
// transaction. It reports whether the position moved.
func (t *Tracker) AdvanceIdle(lsn pglogrepl.LSN) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.low != t.next || t.head != len(t.marks) || lsn <= t.confirmed {
		return false
	}
	t.confirmed = lsn
	t.lastCommit = time.Time{}
	return true
}

// Confirmed returns the newest LSN that may be reported to Postgres as flushed.
func (t *Tracker) Confirmed() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.confirmed
}

// Stats is a snapshot for metrics and health.
type Stats struct {
	InflightEvents int
	InflightBytes  int
	Confirmed      pglogrepl.LSN
	// LastCommit is the commit time of the newest confirmable transaction; zero
	// once the tracker is idle and caught up.
	LastCommit time.Time
	Acked      uint64 // events acked since start
}

// Stats returns a consistent snapshot.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{
		InflightEvents: int(t.next - t.low), //nolint:gosec // G115: at most maxEvents
		InflightBytes:  t.inflightBytes,
		Confirmed:      t.confirmed,
		LastCommit:     t.lastCommit,
		Acked:          t.low,
	}
}

// Idle reports whether no event is in flight.
func (t *Tracker) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low == t.next
}
