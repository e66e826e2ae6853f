package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/logrepl"
	"github.com/relay-dev/relay/pkg/metrics"
)

type fakePipeline struct {
	tr      *checkpoint.Tracker
	stats   logrepl.Stats
	kafka   bool
	standby bool
}

func (f *fakePipeline) Tracker() *checkpoint.Tracker { return f.tr }
func (f *fakePipeline) Stream() *logrepl.Stats       { return &f.stats }
func (f *fakePipeline) KafkaConnected() bool         { return f.kafka }
func (f *fakePipeline) Standby() bool                { return f.standby }

const limit = time.Minute

// steps observes the watch every 5s for d, calling each before a sample.
func steps(w *stallWatch, now *time.Time, d time.Duration, each func()) {
	for end := now.Add(d); now.Before(end); {
		*now = now.Add(5 * time.Second)
		if each != nil {
			each()
		}
		w.observe(*now)
	}
}

func TestStallWatchIdleTailIsNotAStall(t *testing.T) {
	// After a commit the received position runs a few bytes past what
	// keepalives let the relay confirm; on an idle database it stays so.
	p := &fakePipeline{tr: checkpoint.New(10, 1<<20, 1000)}
	p.stats.Streaming.Store(true)
	p.stats.ReceivedLSN.Store(1026)
	w := newStallWatch(p, limit)
	now := time.Unix(1e9, 0)
	w.observe(now)
	steps(w, &now, 10*limit, func() { p.stats.LastProgress.Store(now.UnixNano()) })
	if why := w.stalled(now); why != "" {
		t.Fatalf("idle relay reported stalled: %s", why)
	}
}

func TestStallWatchUnackedEvents(t *testing.T) {
	p := &fakePipeline{tr: checkpoint.New(10, 1<<20, 1000)}
	p.stats.Streaming.Store(true)
	w := newStallWatch(p, limit)
	now := time.Unix(1e9, 0)
	w.observe(now)
	seq, _ := p.tr.TryReserve(10)
	p.tr.TryReserve(10)
	// The stream keeps heartbeating under backpressure; that is no progress
	// while events wait for acks.
	beat := func() { p.stats.LastProgress.Store(now.UnixNano()) }
	steps(w, &now, limit-5*time.Second, beat)
	if why := w.stalled(now); why != "" {
		t.Fatalf("stalled before the timeout: %s", why)
	}
	steps(w, &now, 10*time.Second, beat)
	why := w.stalled(now)
	if !strings.Contains(why, "2 events in flight") {
		t.Fatalf("stalled = %q, want a stall naming 2 events in flight", why)
	}
	// One ack is progress.
	p.tr.Ack(seq)
	w.observe(now.Add(time.Second))
	if why := w.stalled(now.Add(time.Second)); why != "" {
		t.Fatalf("still stalled after an ack: %s", why)
	}
}

func TestStallWatchSlowButMoving(t *testing.T) {
	p := &fakePipeline{tr: checkpoint.New(1000, 1<<20, 1000)}
	w := newStallWatch(p, limit)
	now := time.Unix(1e9, 0)
	w.observe(now)
	next, _ := p.tr.TryReserve(1)
	steps(w, &now, 10*limit, func() {
		// Always something in flight, but acks keep coming.
		p.tr.TryReserve(1)
		p.tr.Ack(next)
		next++
	})
	if why := w.stalled(now); why != "" {
		t.Fatalf("slow pipeline reported stalled: %s", why)
	}
}

func TestStallWatchDeadStreamLoop(t *testing.T) {
	p := &fakePipeline{tr: checkpoint.New(10, 1<<20, 1000)}
	p.stats.Streaming.Store(true)
	p.stats.ReceivedLSN.Store(5000)
	p.stats.LastProgress.Store(1)
	w := newStallWatch(p, limit)
	now := time.Unix(1e9, 0)
	w.observe(now)
	steps(w, &now, 2*limit, nil)
	if why := w.stalled(now); !strings.Contains(why, "received WAL up to 5000 but confirmed only 1000") {
		t.Fatalf("stalled = %q", why)
	}
}

func TestStallWatchBetweenAttempts(t *testing.T) {
	// A hot standby, or a relay waiting for Postgres, has no tracker and no
	// stream: restarting it would not help.
	p := &fakePipeline{}
	p.stats.ReceivedLSN.Store(5000)
	w := newStallWatch(p, limit)
	now := time.Unix(1e9, 0)
	w.observe(now)
	steps(w, &now, 10*limit, nil)
	if why := w.stalled(now); why != "" {
		t.Fatalf("standby reported stalled: %s", why)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestEndpoints(t *testing.T) {
	p := &fakePipeline{tr: checkpoint.New(10, 1<<20, 0)}
	m := metrics.New("test")
	m.Watch(p)
	w := newStallWatch(p, limit)
	mux := healthMux(p, w, m)

	if code, body := get(t, mux, "/readyz"); code != 503 || !strings.Contains(body, "replication stream established=false, kafka connected=false") {
		t.Errorf("/readyz before streaming = %d %q", code, body)
	}
	p.standby = true
	if code, _ := get(t, mux, "/readyz"); code != 503 {
		t.Errorf("/readyz for a standby = %d, want 503", code)
	}
	if code, body := get(t, mux, "/readyz?standby=ok"); code != 200 || !strings.Contains(body, "hot standby") {
		t.Errorf("/readyz?standby=ok for a standby = %d %q", code, body)
	}
	p.standby = false
	if code, _ := get(t, mux, "/readyz?standby=ok"); code != 503 {
		t.Errorf("/readyz?standby=ok when neither streaming nor standby = %d, want 503", code)
	}
	p.stats.Streaming.Store(true)
	p.kafka = true
	if code, _ := get(t, mux, "/readyz"); code != 200 {
		t.Errorf("/readyz while streaming = %d", code)
	}

	now := time.Now()
	w.observe(now.Add(-2 * limit))
	p.tr.TryReserve(1)
	w.observe(now.Add(-limit - time.Second))
	w.observe(now)
	if code, body := get(t, mux, "/healthz"); code != 503 || !strings.Contains(body, "stalled: 1 events in flight") {
		t.Errorf("/healthz when wedged = %d %q", code, body)
	}
	p.tr.Ack(0)
	w.observe(time.Now())
	if code, _ := get(t, mux, "/healthz"); code != 200 {
		t.Errorf("/healthz after progress = %d", code)
	}

	code, body := get(t, mux, "/metrics")
	if code != 200 || !strings.Contains(body, "relay_inflight_events 0\n") || !strings.Contains(body, `relay_build_info{version="test"} 1`) {
		t.Errorf("/metrics = %d\n%s", code, body)
	}
}
