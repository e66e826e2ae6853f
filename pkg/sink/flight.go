package sink

import (
	"hash/maphash"
	"sync"
)

// keySlots is how many buckets flight hashes keys into. A collision only
// makes a dead letter wait for an unrelated key's record.
const keySlots = 1024

// flight counts the records the producer holds unacknowledged: in total, so
// that Run knows when a drain is over, and per key for the event records
// (not the dead letters), so that a dead letter can wait for its key's
// earlier records. Without that wait a dead letter could land ahead of an
// earlier event of its key that fails later, is dead-lettered after the
// restart and so comes second in the dead letter topic.
type flight struct {
	seed maphash.Seed

	mu      sync.Mutex
	n       int
	keys    [keySlots]int32
	closed  bool
	done    chan struct{} // closed once closed and nothing is in flight
	waiting bool          // Run waits on settled
	settled chan struct{}
}

func newFlight() *flight {
	return &flight{seed: maphash.MakeSeed(), done: make(chan struct{}), settled: make(chan struct{}, 1)}
}

func (f *flight) slot(key []byte) uint16 {
	return uint16(maphash.Bytes(f.seed, key) % keySlots)
}

// add counts it as sent. Only event records with a key are counted per key:
// records without one have no order to keep.
func (f *flight) add(it *item, deadLetter bool) {
	var s uint16
	if !deadLetter && it.ev.Key != nil {
		s = f.slot(it.ev.Key) + 1
	}
	it.slot = s
	f.mu.Lock()
	f.n++
	if s > 0 {
		f.keys[s-1]++
	}
	f.mu.Unlock()
}

// settle counts it as acknowledged or failed.
func (f *flight) settle(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if it.slot > 0 {
		f.keys[it.slot-1]--
	}
	if f.waiting {
		f.waiting = false
		select {
		case f.settled <- struct{}{}:
		default:
		}
	}
	if f.closed && f.n == 0 {
		close(f.done)
	}
}

// close marks the input finished: done closes when the last record settles.
func (f *flight) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.n == 0 {
		close(f.done)
	}
}

// keyBusy reports whether an event record of key is in flight; if so, the
// next settle sends a token on f.settled.
func (f *flight) keyBusy(key []byte) bool {
	s := f.slot(key)
	f.mu.Lock()
	defer f.mu.Unlock()
	busy := f.keys[s] > 0
	f.waiting = busy
	return busy
}

func (f *flight) isWaiting() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}
