package checkpoint

import "github.com/jackc/pglogrepl"

// With exactly-once delivery a Postgres transaction too big for one Kafka
// transaction is split across several, so a progress record must be able to
// name a position inside a transaction: the transaction (by the commit LSN
// its Begin announces, known before any of its events) and how many of its
// events, in WAL order, are in Kafka. Postgres cannot restart a stream
// inside a transaction, so a resumed stream starts at the record's LSN,
// receives that transaction from its first event again and skips as many
// as the record counts.

// EventPos is an event's place in the stream: the commit LSN of its
// transaction and its index among that transaction's events. The zero value
// means "no event".
type EventPos struct {
	Txn   pglogrepl.LSN
	Index int
}

// Cut returns the progress position once every event up to and including
// last is in Kafka, where whole is the end of the newest transaction all of
// whose events are (the tracker's acked position once those events are
// acked). When last's transaction has not ended by whole, it is only partly
// in Kafka and the position says how much of it.
func Cut(whole pglogrepl.LSN, last EventPos) (pglogrepl.LSN, *Partial) {
	// A transaction's commit record ends after its commit LSN, so a whole
	// position at or past last.Txn has last's transaction complete.
	if last.Txn == 0 || whole >= last.Txn {
		return whole, nil
	}
	return whole, &Partial{CommitLSN: last.Txn, Events: last.Index + 1}
}

// ResumePos is the position of the last event a record covers, the
// starting point for Cut in a stream resumed from it.
func ResumePos(p *Partial) EventPos {
	if p == nil || p.Events <= 0 {
		return EventPos{}
	}
	return EventPos{Txn: p.CommitLSN, Index: p.Events - 1}
}

// Cursor numbers the events of a stream by transaction and, in a stream
// resumed from a record with a Partial, tells which events that record
// already covers. Use one per stream; the zero value skips nothing.
type Cursor struct {
	skip    *Partial
	txn     pglogrepl.LSN
	next    int
	skipped int
}

// NewCursor returns a cursor for a stream resumed from a record whose
// Partial is p (nil: nothing to skip).
func NewCursor(p *Partial) *Cursor {
	if p != nil && p.Events <= 0 {
		p = nil
	}
	return &Cursor{skip: p}
}

// Begin starts a transaction whose Begin announced commitLSN.
func (c *Cursor) Begin(commitLSN pglogrepl.LSN) {
	c.txn, c.next = commitLSN, 0
}

// Next numbers the next event of the current transaction and reports
// whether it is already in Kafka (and must not be sent again).
func (c *Cursor) Next() (EventPos, bool) {
	pos := EventPos{Txn: c.txn, Index: c.next}
	c.next++
	if c.skip != nil && c.txn == c.skip.CommitLSN && pos.Index < c.skip.Events {
		c.skipped++
		return pos, true
	}
	return pos, false
}

// Skipped is how many events Next has reported as already in Kafka.
func (c *Cursor) Skipped() int { return c.skipped }
