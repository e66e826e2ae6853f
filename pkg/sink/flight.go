package sink

import (
	"hash/maphash"

	"github.com/relay-dev/relay/pkg/decode"
)

// keySlots is how many buckets flight hashes keys into. A collision only
// makes a dead letter wait for an unrelated key's record.
const keySlots = 1024

// flight counts the records the producer holds unacknowledged: in total, so
// that Run knows when a drain is over, and per key for the event records
// (not the dead letters), so that a dead letter can wait for its key's
// earlier records. Without that wait a dead letter could land ahead of an
// earlier event of its key that fails later, is dead-lettered after the
// restart and so comes second in the dead letter topic. Only Run's
// goroutine uses it.
type flight struct {
	seed maphash.Seed
	n    int
	keys [keySlots]int32
}

func newFlight() flight { return flight{seed: maphash.MakeSeed()} }

func (f *flight) slot(key []byte) uint16 {
	return uint16(maphash.Bytes(f.seed, key) % keySlots)
}

// add counts ev as sent and returns the slot to settle it with. Only event
// records with a key are counted per key: records without one have no order
// to keep.
func (f *flight) add(ev *decode.Event, deadLetter bool) uint16 {
	f.n++
	if deadLetter || ev.Key == nil {
		return 0
	}
	s := f.slot(ev.Key)
	f.keys[s]++
	return s + 1
}

// settle counts a record as acknowledged.
func (f *flight) settle(slot uint16) {
	f.n--
	if slot > 0 {
		f.keys[slot-1]--
	}
}

// keyBusy reports whether an event record of key is in flight.
func (f *flight) keyBusy(key []byte) bool { return f.keys[f.slot(key)] > 0 }
