package checkpoint

import (
	"errors"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	rec := &Record{Slot: "s", SystemID: "1", Timeline: 1, LSN: 500, Fingerprint: "f"}
	for _, tc := range []struct {
		name   string
		in     Resume
		start  uint64
		create bool
		err    string // substring of a fatal ErrSlotLost
		warn   string
	}{
		{name: "first start", in: Resume{}, create: true},
		{name: "slot behind record resumes from the record", in: Resume{SlotExists: true, SlotConfirmed: 300, Record: rec}, start: 500},
		{name: "slot at record", in: Resume{SlotExists: true, SlotConfirmed: 500, Record: rec}, start: 500},
		{name: "slot without record: trust the slot", in: Resume{SlotExists: true, SlotConfirmed: 300}, start: 300},
		{name: "slot dropped", in: Resume{Record: rec}, err: "is missing"},
		{name: "slot dropped, recreate", in: Resume{Record: rec, Recreate: true}, create: true, warn: "recreate"},
		{name: "slot vanished while running", in: Resume{Streamed: true}, err: "vanished"},
		{name: "slot of another database", in: Resume{Others: []Record{{SystemID: "2", LSN: 9}}}, err: "another database"},
		{name: "slot ahead of record", in: Resume{SlotExists: true, SlotConfirmed: 600, Record: rec}, err: "ahead"},
		{name: "slot ahead, recreate accepts it", in: Resume{SlotExists: true, SlotConfirmed: 600, Record: rec, Recreate: true}, start: 600, warn: "accepting"},
		{name: "mapping changed", in: Resume{SlotExists: true, SlotConfirmed: 500, Record: rec, Fingerprint: "g"}, start: 500, warn: "mapping changed"},
		{name: "timeline changed", in: Resume{SlotExists: true, SlotConfirmed: 500, Record: rec, Timeline: 2}, start: 500, warn: "timeline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Slot = "s"
			if in.Timeline == 0 {
				in.Timeline = 1
			}
			d, err := Decide(in)
			if tc.err != "" {
				if !errors.Is(err, ErrSlotLost) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "on_slot_lost") {
					t.Fatalf("err %v, want ErrSlotLost mentioning %q and the way on", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if uint64(d.Start) != tc.start || d.CreateSlot != tc.create {
				t.Fatalf("start %s create %v, want %d %v", d.Start, d.CreateSlot, tc.start, tc.create)
			}
			if w := strings.Join(d.Warnings, "|"); (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
				t.Fatalf("warnings %q, want %q", w, tc.warn)
			}
		})
	}
}
