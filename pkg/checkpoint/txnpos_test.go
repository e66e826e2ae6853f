package checkpoint

import (
	"math/rand"
	"testing"

	"github.com/jackc/pglogrepl"
)

// pgTxn is a Postgres transaction as the stream sees it: Begin announces
// commit, Commit ends at end, and events are its event ids in WAL order.
type pgTxn struct {
	commit, end pglogrepl.LSN
	events      []int
}

// wal builds n transactions with random event counts (some empty, some big),
// LSNs increasing as in a WAL.
func wal(rng *rand.Rand, n int) []pgTxn {
	var txns []pgTxn
	lsn, id := pglogrepl.LSN(0x1000), 0
	for i := 0; i < n; i++ {
		t := pgTxn{}
		k := rng.Intn(4)
		if rng.Intn(8) == 0 {
			k = 20 + rng.Intn(60) // bigger than a Kafka transaction
		}
		for j := 0; j < k; j++ {
			t.events = append(t.events, id)
			id++
		}
		lsn += pglogrepl.LSN(100 + 50*k)
		t.commit = lsn
		lsn += 40
		t.end = lsn
		txns = append(txns, t)
	}
	return txns
}

// stream replays what Postgres sends from start (transactions committing at
// or after it) into Kafka transactions of at most maxPer events, committing
// a progress record each time as the relay does. It returns the events each
// committed Kafka transaction carried and the record after each.
func stream(txns []pgTxn, start pglogrepl.LSN, resume *Partial, maxPer int) (batches [][]int, records []Record) {
	cur := NewCursor(resume)
	last := ResumePos(resume)
	whole := start
	var batch []int
	commit := func() {
		lsn, p := Cut(whole, last)
		batches = append(batches, batch)
		records = append(records, Record{LSN: lsn, Partial: p})
		batch = nil
	}
	for _, t := range txns {
		if t.commit < start {
			continue // Postgres skips what committed before the start position
		}
		cur.Begin(t.commit)
		for _, ev := range t.events {
			pos, skip := cur.Next()
			if skip {
				continue
			}
			batch = append(batch, ev)
			last = pos
			if len(batch) == maxPer {
				commit()
			}
		}
		whole = t.end // its events are all handed over (acked, in the relay)
	}
	if len(batch) > 0 || len(records) == 0 {
		commit()
	}
	return batches, records
}

func TestCutSplitsALargeTransaction(t *testing.T) {
	// One transaction of 25 events (commit at 0/500, ends 0/540) after a
	// whole one ending at 0/100, in Kafka transactions of 10.
	txns := []pgTxn{{commit: 0x90, end: 0x100, events: []int{0}}, {commit: 0x500, end: 0x540}}
	for i := 1; i <= 25; i++ {
		txns[1].events = append(txns[1].events, i)
	}
	_, recs := stream(txns, 0, nil, 10)
	want := []Record{
		{LSN: 0x100, Partial: &Partial{CommitLSN: 0x500, Events: 9}},
		{LSN: 0x100, Partial: &Partial{CommitLSN: 0x500, Events: 19}},
		{LSN: 0x540},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i := range want {
		if recs[i].LSN != want[i].LSN || (recs[i].Partial == nil) != (want[i].Partial == nil) ||
			(recs[i].Partial != nil && *recs[i].Partial != *want[i].Partial) {
			t.Errorf("record %d: got LSN %s partial %+v, want %s %+v", i, recs[i].LSN, recs[i].Partial, want[i].LSN, want[i].Partial)
		}
	}

	// Resuming from the middle record: Postgres sends the big transaction
	// again from its first event; the first 19 are skipped.
	batches, _ := stream(txns, want[1].LSN, want[1].Partial, 10)
	var got []int
	for _, b := range batches {
		got = append(got, b...)
	}
	if len(got) != 6 || got[0] != 20 || got[5] != 25 {
		t.Fatalf("resumed stream sent %v, want events 20..25", got)
	}
}

func TestCursorSkipsOnlyTheNamedTransaction(t *testing.T) {
	c := NewCursor(&Partial{CommitLSN: 0x200, Events: 2})
	c.Begin(0x100) // another transaction with the same event indexes
	if _, skip := c.Next(); skip {
		t.Fatal("skipped an event of a transaction the record does not name")
	}
	c.Begin(0x200)
	var skips []bool
	for i := 0; i < 4; i++ {
		pos, skip := c.Next()
		if pos.Txn != 0x200 || pos.Index != i {
			t.Fatalf("event %d numbered %+v", i, pos)
		}
		skips = append(skips, skip)
	}
	if !skips[0] || !skips[1] || skips[2] || skips[3] || c.Skipped() != 2 {
		t.Fatalf("skips %v (skipped %d), want the first 2", skips, c.Skipped())
	}
	if _, skip := NewCursor(nil).Next(); skip {
		t.Fatal("a cursor without a partial skipped an event")
	}
}

// TestResumeFromAnyRecordIsExactlyOnce crashes after every committed Kafka
// transaction of random streams and resumes from its record: what the
// committed transactions carried before the crash plus what the resumed
// stream sends must be every event once, in order.
func TestResumeFromAnyRecordIsExactlyOnce(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		txns := wal(rng, 1+rng.Intn(30))
		var all []int
		for _, tx := range txns {
			all = append(all, tx.events...)
		}
		maxPer := 1 + rng.Intn(12)
		batches, recs := stream(txns, 0, nil, maxPer)
		for crash := range recs {
			var got []int
			for _, b := range batches[:crash+1] {
				got = append(got, b...)
			}
			// The crash may also come after a second restart: resume, commit
			// once, crash again, resume again.
			start, partial := recs[crash].LSN, recs[crash].Partial
			if rng.Intn(2) == 0 {
				b2, r2 := stream(txns, start, partial, maxPer)
				got = append(got, b2[0]...)
				start, partial = r2[0].LSN, r2[0].Partial
			}
			b3, _ := stream(txns, start, partial, maxPer)
			for _, b := range b3 {
				got = append(got, b...)
			}
			if len(got) != len(all) {
				t.Fatalf("round %d (max %d per Kafka txn), crash after txn %d (record %s %+v): %d events, want %d\ngot  %v\nwant %v",
					round, maxPer, crash, recs[crash].LSN, recs[crash].Partial, len(got), len(all), got, all)
			}
			for i := range all {
				if got[i] != all[i] {
					t.Fatalf("round %d, crash after txn %d: event %d is %d, want %d", round, crash, i, got[i], all[i])
				}
			}
		}
	}
}

func TestCutWithoutEvents(t *testing.T) {
	if lsn, p := Cut(0x300, EventPos{}); lsn != 0x300 || p != nil {
		t.Fatalf("no events: %s %+v", lsn, p)
	}
	// A record-only Kafka transaction while a split transaction is still
	// open keeps naming it: dropping the partial would re-send its events.
	last := ResumePos(&Partial{CommitLSN: 0x500, Events: 7})
	if lsn, p := Cut(0x100, last); lsn != 0x100 || p == nil || *p != (Partial{CommitLSN: 0x500, Events: 7}) {
		t.Fatalf("open split transaction: %s %+v", lsn, p)
	}
}
