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
			if got, w := tr.Confirmed(), pglogrepl.LSN(want()); got != w {
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
	if !tr.AdvanceIdle(70) || tr.Confirmed() != 70 {
		t.Fatal("idle tracker did not advance to the keepalive position")
	}
	seq, _ := tr.TryReserve(1)
	if tr.AdvanceIdle(90) {
		t.Fatal("advanced past an unacked event")
	}
	tr.Commit(80, time.Time{})
	if tr.AdvanceIdle(90) || tr.Confirmed() != 70 {
		t.Fatal("advanced past a pending commit")
	}
	tr.Ack(seq)
	if tr.Confirmed() != 80 {
		t.Fatalf("confirmed %d after ack, want 80", tr.Confirmed())
	}
	if !tr.AdvanceIdle(90) {
		t.Fatal("did not advance once idle")
	}
	if tr.AdvanceIdle(85) || tr.Confirmed() != 90 {
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

// An event too large for the byte cap is admitted alone; its size must come
// back out of the in-flight bytes exactly when acked, even past 2 GiB (the
// size of a 1 GB row counted twice), or the cap would never free again.
func TestHugeEventReleasesItsBytes(t *testing.T) {
	tr := New(4, 1<<20, 0)
	const huge = 3 << 30
	seq, ok := tr.TryReserve(huge)
	if !ok {
		t.Fatal("an event larger than the cap must be admitted when nothing is in flight")
	}
	if got := tr.Stats().InflightBytes; got != huge {
		t.Fatalf("in-flight bytes %d, want %d", got, huge)
	}
	tr.Ack(seq)
	if got := tr.Stats().InflightBytes; got != 0 {
		t.Fatalf("in-flight bytes after the ack: %d, want 0", got)
	}
	if _, ok := tr.TryReserve(100); !ok {
		t.Fatal("the cap did not free after the huge event was acked")
	}
}
