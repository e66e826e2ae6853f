package pipeline

import (
	"testing"
	"time"
)

func TestRecordWait(t *testing.T) {
	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return last.Add(d) }
	for _, c := range []struct {
		name     string
		now      time.Time
		last     time.Time
		events   uint64
		stopping bool
		want     time.Duration
	}{
		{"first record is written at once", at(0), time.Time{}, 1, false, 0},
		{"never sooner than the gap", at(5 * time.Millisecond), last, 1000, false, confirmGap - 5*time.Millisecond},
		{"not sooner than the gap when stopping either", at(5 * time.Millisecond), last, 1, true, confirmGap - 5*time.Millisecond},
		{"enough events after the gap", at(confirmGap), last, recordEvents, false, 0},
		{"a trickle inside the gap waits for more, not for the gap", at(5 * time.Millisecond), last, 1, false, recordMaxGap - 5*time.Millisecond},
		{"a trickle waits for more, at most the longest gap", at(confirmGap), last, 1, false, recordMaxGap - confirmGap},
		{"a trickle waits at most the longest gap", at(recordMaxGap - 10*time.Millisecond), last, 1, false, 10 * time.Millisecond},
		{"a trickle is written after the longest gap", at(recordMaxGap), last, 1, false, 0},
		{"stopping writes after the gap", at(confirmGap), last, 1, true, 0},
	} {
		if got, _ := recordWait(c.now, c.last, c.events, c.stopping); got != c.want && (c.want > 0 || got > 0) {
			t.Errorf("%s: recordWait = %s, want %s", c.name, got, c.want)
		}
	}
}
