package checkpoint

import (
	"github.com/jackc/pglogrepl"

	"math/rand"
	"testing"
	"time"
)

// TestRandomOutOfOrderAcks drives the tracker with random transactions and acks
// in random order and checks after every step that the confirmed LSN is exactly
// the end of the newest transaction whose events and all earlier events are
// acked: never beyond (that would lose events on restart), never behind once
// acked (that would hold WAL back).
func TestRandomOutOfOrderAcks(t *testing.T) {
	for seed := int64(1); seed <= 50; seed++ {
		rng := rand.New(rand.NewSource(seed))
		maxEvents := 1 + rng.Intn(64)
		tr := New(maxEvents, 1<<30, 100)

		type txn struct {
			lsn    uint64
			events []uint64
		}
		var txns []txn
		acked := map[uint64]bool{}
		var pending []uint64
		lsn := uint64(100)
		var open *txn

		want := func() uint64 {
			w := uint64(100)
			for _, x := range txns {
				for _, s := range x.events {
					if !acked[s] {
						return w
					}
				}
				w = x.lsn
			}
			return w
		}

		for step := 0; step < 2000; step++ {
			switch r := rng.Intn(10); {
			case r < 5: // produce an event into the open transaction
				if open == nil {
					open = &txn{}
				}
				seq, ok := tr.TryReserve(1 + rng.Intn(100))
				if !ok {
					if len(pending) == 0 {
						t.Fatalf("seed %d: reserve refused with nothing pending", seed)
					}
					continue
				}
				open.events = append(open.events, seq)
				pending = append(pending, seq)
			case r < 7: // commit (possibly empty)
				lsn += uint64(1 + rng.Intn(50))
				if open == nil {
					open = &txn{}
				}
				open.lsn = lsn
				txns = append(txns, *open)
				open = nil
				tr.Commit(pglogrepl.LSN(lsn), time.Unix(int64(lsn), 0))
			default: // ack a random pending event, sometimes twice
				if len(pending) == 0 {
					continue
				}
				i := rng.Intn(len(pending))
				seq := pending[i]
				pending = append(pending[:i], pending[i+1:]...)
				acked[seq] = true
				tr.Ack(seq)
				if rng.Intn(5) == 0 {
					tr.Ack(seq)
				}
			}
			if got, w := tr.Acked(), pglogrepl.LSN(want()); got != w {
				t.Fatalf("seed %d step %d: confirmed %d, want %d", seed, step, got, w)
			}
			// Acked events above the watermark still occupy the window.
			if st := tr.Stats(); st.InflightEvents < len(pending) || st.InflightEvents > maxEvents {
				t.Fatalf("seed %d step %d: inflight %d, pending %d, cap %d", seed, step, st.InflightEvents, len(pending), maxEvents)
			}
		}
	}
}

func TestCapsApplyBackpressure(t *testing.T) {
	tr := New(3, 100, 0)
	a, _ := tr.TryReserve(60)
	if _, ok := tr.TryReserve(60); ok {
		t.Fatal("byte cap not applied")
	}
	tr.Ack(a)
	select {
	case <-tr.Space():
	default:
		t.Fatal("ack did not signal space")
	}
	// An event larger than the byte cap still flows when alone in flight.
	big, ok := tr.TryReserve(1000)
	if !ok {
		t.Fatal("oversized event refused with nothing in flight")
	}
	tr.Ack(big)
	for i := 0; i < 3; i++ {
		if _, ok := tr.TryReserve(1); !ok {
			t.Fatalf("event %d refused under the event cap", i)
		}
	}
	if _, ok := tr.TryReserve(1); ok {
		t.Fatal("event cap not applied")
	}
}

func TestAdvanceIdleOnlyWhenNothingInFlight(t *testing.T) {
	tr := New(10, 1000, 50)
	if !tr.AdvanceIdle(70) || tr.Acked() != 70 {
		t.Fatal("idle tracker did not advance to the keepalive position")
	}
	seq, _ := tr.TryReserve(1)
	if tr.AdvanceIdle(90) {
		t.Fatal("advanced past an unacked event")
	}
	tr.Commit(80, time.Time{})
	if tr.AdvanceIdle(90) || tr.Acked() != 70 {
		t.Fatal("advanced past a pending commit")
	}
	tr.Ack(seq)
	if tr.Acked() != 80 {
		t.Fatalf("confirmed %d after ack, want 80", tr.Acked())
	}
	if !tr.AdvanceIdle(90) {
		t.Fatal("did not advance once idle")
	}
	if tr.AdvanceIdle(85) || tr.Acked() != 90 {
		t.Fatal("moved backwards")
	}
}

func BenchmarkReserveAck(b *testing.B) {
	tr := New(1024, 1<<30, 0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		seq, _ := tr.TryReserve(200)
		tr.Commit(pglogrepl.LSN(i+1), time.Time{})
		tr.Ack(seq)
	}
}

func TestConfirmedWaitsForDurable(t *testing.T) {
	tr := New(10, 1<<20, 50)
	seq, _ := tr.TryReserve(10)
	tr.Commit(80, time.Time{})
	tr.Ack(seq)
	if tr.Acked() != 80 || tr.Confirmed() != 50 {
		t.Fatalf("acked %s confirmed %s, want 0/50 confirmed until a record vouches for 0/80", tr.Acked(), tr.Confirmed())
	}
	select {
	case <-tr.Progress():
	default:
		t.Fatal("acked moved without a progress signal")
	}
	tr.MarkDurable(90) // beyond acked: no record can vouch for unacked events
	if tr.Confirmed() != 50 {
		t.Fatalf("confirmed %s after a durable mark beyond acked", tr.Confirmed())
	}
	tr.MarkDurable(80)
	tr.MarkDurable(60)
	if tr.Confirmed() != 80 {
		t.Fatalf("confirmed %s, want 0/50", tr.Confirmed())
	}
}

// The stream waits on its socket, so it learns of a position made durable
// elsewhere only through OnDurable: once per move, and never after it has
// unregistered.
func TestOnDurableCalledPerMove(t *testing.T) {
	tr := New(10, 1<<20, 50)
	calls := 0
	tr.OnDurable(func() {
		calls++
		if tr.mu.TryLock() {
			t.Error("OnDurable's function ran without the tracker locked")
			tr.mu.Unlock()
		}
	})
	seq, _ := tr.TryReserve(10)
	tr.Commit(80, time.Time{})
	tr.Ack(seq)
	tr.MarkDurable(90) // beyond acked: refused
	tr.MarkDurable(70)
	tr.MarkDurable(70) // no move
	tr.MarkDurable(60) // never back
	if calls != 1 {
		t.Fatalf("OnDurable's function ran %d times for one move, want 1", calls)
	}
	tr.OnDurable(nil)
	tr.MarkDurable(80)
	if calls != 1 || tr.Confirmed() != 80 {
		t.Fatalf("after OnDurable(nil): %d calls, confirmed %s; want 1 and 0/80", calls, tr.Confirmed())
	}
}

func TestResetAbandonsInFlight(t *testing.T) {
	tr := New(4, 1<<20, 10)
	old, _ := tr.TryReserve(10)
	tr.Commit(20, time.Time{})
	if got := tr.Reset(5); got != 10 {
		t.Fatalf("reset to %s, want the durable 0/A (never back)", got)
	}
	tr.Ack(old) // a late ack from the abandoned attempt
	if !tr.Idle() || tr.Acked() != 10 {
		t.Fatalf("idle %v acked %s after a stale ack", tr.Idle(), tr.Acked())
	}
	seq, ok := tr.TryReserve(10)
	if !ok || seq == old {
		t.Fatalf("reserve after reset: %d %v", seq, ok)
	}
	tr.Commit(30, time.Time{})
	tr.Ack(seq)
	if tr.Acked() != 30 || tr.Stats().Attempt != 1 {
		t.Fatalf("acked %s attempt %d", tr.Acked(), tr.Stats().Attempt)
	}
}

func TestWhenAckedSignalsOnceAtTheCount(t *testing.T) {
	tr := New(8, 1<<20, 0)
	seqs := make([]uint64, 4)
	for i := range seqs {
		seqs[i], _ = tr.TryReserve(1)
	}
	ch := tr.WhenAcked(3)
	signalled := func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	tr.Ack(seqs[1]) // above the watermark: not counted yet
	tr.Ack(seqs[0])
	if signalled() {
		t.Fatal("signalled at 2 acked events, want 3")
	}
	tr.Ack(seqs[2])
	if !signalled() {
		t.Fatal("not signalled at 3 acked events")
	}
	tr.Ack(seqs[3])
	if signalled() {
		t.Fatal("signalled again after the count was reached")
	}
	// A count already reached is signalled at once, and a new request
	// drops the signal an earlier one left unread.
	if ch = tr.WhenAcked(2); !signalled() {
		t.Fatal("count already reached: not signalled")
	}
	tr.WhenAcked(4)
	if ch = tr.WhenAcked(10); signalled() {
		t.Fatal("an earlier request's signal was kept")
	}
}
