package checkpoint

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
)

// ErrSlotLost means the slot cannot be trusted to hold every event the
// relay has not published: it is missing, or it moved past what the relay's
// progress record vouches for. Events may be missing from Kafka.
var ErrSlotLost = errors.New("replication slot lost")

// Resume is what an attempt knows before it streams.
type Resume struct {
	Slot          string
	SlotExists    bool
	SlotConfirmed pglogrepl.LSN
	SystemID      string
	Timeline      int32
	Fingerprint   string
	// Record is the newest progress record for this slot and system, if any.
	Record *Record
	// Others are records of the same slot name under other system ids.
	Others []Record
	// Streamed says this process already streamed from the slot: a slot
	// missing now vanished while the relay ran.
	Streamed bool
	// Recreate is postgres.on_slot_lost: recreate: carry on from what
	// Postgres has now, saying which range may be missing.
	Recreate bool
}

// Decision is where to start streaming.
type Decision struct {
	Start      pglogrepl.LSN
	CreateSlot bool
	// Warnings are for the log at warn level: what may be missing, a
	// changed mapping, a changed timeline.
	Warnings []string
}

// Decide compares the slot with the progress record. The slot is only ever
// confirmed up to a position a record vouches for, so a slot behind the
// record is normal (PostgreSQL before 17 does not persist a slot's position
// at shutdown) and the record wins; anything else means the slot no longer
// holds every event the relay has not yet published, and Decide refuses
// unless told to recreate.
func Decide(r Resume) (Decision, error) {
	var d Decision
	rec := r.Record
	if rec != nil && rec.Fingerprint != "" && r.Fingerprint != "" && rec.Fingerprint != r.Fingerprint {
		d.Warnings = append(d.Warnings, fmt.Sprintf("the publication and table mapping changed since the progress record was written (fingerprint %s by relay %s at %s, now %s): if two relays with different configs share slot %q, each serves only part of the stream",
			rec.Fingerprint, rec.Version, rec.Time.Format("2006-01-02T15:04:05Z07:00"), r.Fingerprint, r.Slot))
	}
	if rec != nil && rec.Timeline != 0 && rec.Timeline != r.Timeline {
		d.Warnings = append(d.Warnings, fmt.Sprintf("the server's timeline changed from %d to %d since the progress record was written (a failover or a restore)", rec.Timeline, r.Timeline))
	}
	ways := func(from pglogrepl.LSN) string {
		return fmt.Sprintf("To check: compare the outbox rows committed after %s with the ids (header id) in Kafka. "+
			"Ways on: replay rows still in the outbox with relay replay, then restart with postgres.on_slot_lost: recreate "+
			"(RELAY_POSTGRES_ON_SLOT_LOST=recreate) to carry on from what Postgres holds now, accepting the gap", from)
	}
	switch {
	case !r.SlotExists && rec != nil:
		why := fmt.Sprintf("replication slot %q is missing, but the relay's progress record says every event up to %s was published (written %s by relay %s): the slot was dropped, or this server is a new primary the slot was not synchronised to (postgres.slot_failover). Events committed after %s may never be relayed",
			r.Slot, rec.LSN, rec.Time.Format("2006-01-02T15:04:05Z07:00"), rec.Version, rec.LSN)
		if !r.Recreate {
			return d, fmt.Errorf("%w: %s. %s", ErrSlotLost, why, ways(rec.LSN))
		}
		d.CreateSlot = true
		d.Warnings = append(d.Warnings, why+"; postgres.on_slot_lost is recreate: creating a new slot, events between "+rec.LSN.String()+" and its start are not relayed")
	case !r.SlotExists && r.Streamed:
		why := fmt.Sprintf("replication slot %q vanished while the relay was streaming from it (dropped?): events committed since may never be relayed", r.Slot)
		if !r.Recreate {
			return d, fmt.Errorf("%w: %s. %s", ErrSlotLost, why, ways(0))
		}
		d.CreateSlot = true
		d.Warnings = append(d.Warnings, why+"; postgres.on_slot_lost is recreate: creating a new slot")
	case !r.SlotExists && len(r.Others) > 0:
		why := fmt.Sprintf("replication slot %q is missing and the progress topic holds records of it only for another database cluster (%s), none for this one (system id %s): the database was replaced or restored, and events committed on the old one after %s may never have been relayed",
			r.Slot, describe(r.Others), r.SystemID, r.Others[0].LSN)
		if !r.Recreate {
			return d, fmt.Errorf("%w: %s. %s", ErrSlotLost, why, ways(r.Others[0].LSN))
		}
		d.CreateSlot = true
		d.Warnings = append(d.Warnings, why+"; postgres.on_slot_lost is recreate: creating a new slot")
	case !r.SlotExists:
		d.CreateSlot = true // a first start
	case rec != nil && r.SlotConfirmed > rec.LSN:
		why := fmt.Sprintf("replication slot %q is at %s, ahead of the relay's progress record at %s (written %s by relay %s): something other than this relay confirmed it (another tool, pg_replication_slot_advance, or a slot recreated by hand), so events committed between %s and %s may never have been published",
			r.Slot, r.SlotConfirmed, rec.LSN, rec.Time.Format("2006-01-02T15:04:05Z07:00"), rec.Version, rec.LSN, r.SlotConfirmed)
		if !r.Recreate {
			return d, fmt.Errorf("%w: %s. %s", ErrSlotLost, why, ways(rec.LSN))
		}
		d.Start = r.SlotConfirmed
		d.Warnings = append(d.Warnings, why+"; postgres.on_slot_lost is recreate: accepting the slot's position")
	case rec != nil:
		d.Start = rec.LSN
	default:
		// A slot from before the relay kept progress records, or the
		// records were deleted: the slot is the only memory there is.
		d.Start = r.SlotConfirmed
		if r.Streamed {
			d.Warnings = append(d.Warnings, fmt.Sprintf("the progress record of slot %q vanished from the progress topic while the relay ran (topic deleted?): starting a new one at the slot's position %s", r.Slot, r.SlotConfirmed))
		}
	}
	return d, nil
}

func describe(rs []Record) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("system id %s at %s", r.SystemID, r.LSN))
	}
	return strings.Join(parts, ", ")
}
