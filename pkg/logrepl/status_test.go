package logrepl

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
)

// reported returns a stream that last reported at t0, with the tracker's
// position and what it had received then.
func reported(t0 time.Time, interval time.Duration) *Stream {
	s := &Stream{Tracker: checkpoint.New(10, 1<<20, 100), Pipeline: config.Pipeline{StatusInterval: interval}}
	s.received = 100
	s.sentLSN, s.sentWrite = 100, 100
	s.sentAt, s.nextStat = t0, t0.Add(interval)
	return s
}

// durable moves the tracker's confirmable position to lsn, as an acked
// transaction and its progress record do.
func durable(t *testing.T, tr *checkpoint.Tracker, lsn pglogrepl.LSN) {
	t.Helper()
	seq, ok := tr.TryReserve(1)
	if !ok {
		t.Fatal("no room in the tracker")
	}
	tr.Commit(lsn, time.Time{})
	tr.Ack(seq)
	tr.MarkDurable(lsn)
	if tr.Confirmed() != lsn {
		t.Fatalf("confirmed %s, want %s", tr.Confirmed(), lsn)
	}
}

// An idle stream reports its unchanged position only every idleStatus, so
// that an idle relay and its walsender are not woken every status interval,
// but it still reports at once what changed, and every status interval
// while it cannot read the walsender's requests for a reply.
func TestStatusCadence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const interval = time.Second

	s := reported(t0, interval)
	for _, d := range []time.Duration{0, interval, 9 * time.Second} {
		if s.statusDue(t0.Add(d)) {
			t.Errorf("unchanged position due %s after the last report", d)
		}
	}
	if !s.statusDue(t0.Add(idleStatus)) {
		t.Errorf("unchanged position not due %s after the last report", idleStatus)
	}
	if got := s.wake(); !got.Equal(t0.Add(idleStatus)) {
		t.Errorf("idle wake at %s, want the sign of life at %s", got.Sub(t0), idleStatus)
	}

	s.waiting = true
	if s.statusDue(t0.Add(interval / 2)) {
		t.Error("waiting stream due before the status interval")
	}
	if !s.statusDue(t0.Add(interval)) {
		t.Error("waiting stream not due at the status interval: the walsender would time it out")
	}
	if got := s.wake(); !got.Equal(t0.Add(interval)) {
		t.Errorf("waiting wake at %s, want the status interval", got.Sub(t0))
	}

	s = reported(t0, interval)
	s.received = 150 // a transaction is arriving
	if s.statusDue(t0.Add(interval / 2)) {
		t.Error("moving received position due before the status interval")
	}
	if !s.statusDue(t0.Add(interval)) || !s.wake().Equal(t0.Add(interval)) {
		t.Error("moving received position not reported at the status interval")
	}

	s = reported(t0, interval)
	durable(t, s.Tracker, 200)
	if s.statusDue(t0.Add(reportGap / 2)) {
		t.Error("a new durable position due within reportGap of the last report")
	}
	if !s.statusDue(t0.Add(reportGap)) {
		t.Error("a new durable position not due reportGap after the last report")
	}

	s = reported(t0, 30*time.Second)
	if s.statusDue(t0.Add(idleStatus)) || !s.statusDue(t0.Add(30*time.Second)) {
		t.Error("with a status interval above idleStatus, the sign of life should follow the interval")
	}
}
