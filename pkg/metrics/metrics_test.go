package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/logrepl"
)

type fakeState struct {
	tr    *checkpoint.Tracker
	stats logrepl.Stats
}

func (f *fakeState) Tracker() *checkpoint.Tracker { return f.tr }
func (f *fakeState) Stream() *logrepl.Stats       { return &f.stats }

func event(table, topic string) *decode.Event {
	return &decode.Event{
		Table: table, Topic: topic,
		Key:     []byte("k1"),                                                                          // 2
		Value:   []byte(`{"a":1}`),                                                                     // 7
		Headers: []decode.Header{{Key: "id", Value: []byte("abc")}, {Key: "type", Value: []byte("T")}}, // 2+3+4+1
	}
}

func TestCounters(t *testing.T) {
	m := New("1.2.3")
	m.Published(event("public.outbox", "outbox.event.Order"), 3*time.Millisecond)
	m.Published(event("public.outbox", "outbox.event.Order"), 30*time.Millisecond)
	m.Published(event("public.outbox", "outbox.event.Customer"), time.Second)
	m.PublishError("kafka server: Message was too large")
	m.Reconnect("kafka")

	want := `
# HELP relay_events_published_total Events acknowledged by Kafka, by outbox table and topic.
# TYPE relay_events_published_total counter
relay_events_published_total{table="public.outbox",topic="outbox.event.Customer"} 1
relay_events_published_total{table="public.outbox",topic="outbox.event.Order"} 2
# HELP relay_bytes_published_total Key, value and header bytes of events acknowledged by Kafka, by outbox table.
# TYPE relay_bytes_published_total counter
relay_bytes_published_total{table="public.outbox"} 57
# HELP relay_publish_errors_total Events Kafka refused after the producer's retries; each restarts the pipeline.
# TYPE relay_publish_errors_total counter
relay_publish_errors_total{reason="kafka server: Message was too large"} 1
relay_publish_errors_total{reason="message_too_large"} 0
relay_publish_errors_total{reason="other"} 0
relay_publish_errors_total{reason="out_of_brokers"} 0
# HELP relay_reconnects_total Pipeline restarts caused by a component's failure (postgres or kafka).
# TYPE relay_reconnects_total counter
relay_reconnects_total{component="kafka"} 1
relay_reconnects_total{component="postgres"} 0
# HELP relay_up 1 while the relay process runs.
# TYPE relay_up gauge
relay_up 1
# HELP relay_build_info Always 1; the version label identifies the build.
# TYPE relay_build_info gauge
relay_build_info{version="1.2.3"} 1
`
	err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"relay_events_published_total", "relay_bytes_published_total", "relay_publish_errors_total",
		"relay_reconnects_total", "relay_up", "relay_build_info")
	if err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.latency); n != 1 {
		t.Errorf("latency histogram series = %d", n)
	}
	body := scrape(t, m)
	for _, line := range []string{
		`relay_publish_latency_seconds_count 3`,
		`relay_publish_latency_seconds_bucket{le="0.005"} 1`,
		`relay_publish_latency_seconds_bucket{le="0.05"} 2`,
		`relay_publish_latency_seconds_bucket{le="1"} 3`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
}

// TestLabelledCountersAtZero: before anything happens, every labelled
// counter the alert rules use has series at zero, so rate() and increase()
// count the first error instead of seeing a series appear at 1.
func TestLabelledCountersAtZero(t *testing.T) {
	m := New("1.2.3")
	m.Sources([]string{"public.outbox", "message:outbox"})
	body := scrape(t, m)
	for _, line := range []string{
		`relay_publish_errors_total{reason="other"} 0`,
		`relay_publish_errors_total{reason="out_of_brokers"} 0`,
		`relay_publish_errors_total{reason="message_too_large"} 0`,
		`relay_reconnects_total{component="kafka"} 0`,
		`relay_reconnects_total{component="postgres"} 0`,
		`relay_dead_letter_total{table="public.outbox"} 0`,
		`relay_dead_letter_total{table="message:outbox"} 0`,
		`relay_bytes_published_total{table="public.outbox"} 0`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("scrape at start-up lacks %q", line)
		}
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s\n%s", resp.Status, b)
	}
	return string(b)
}

func TestStateGauges(t *testing.T) {
	m := New("dev")
	clock := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m.now = func() time.Time { return clock }
	st := &fakeState{tr: checkpoint.New(10, 1<<20, 0)}
	m.Watch(st)

	gauges := []string{"relay_inflight_events", "relay_inflight_bytes", "relay_confirmed_lsn", "relay_received_lsn", "relay_replication_lag_seconds"}
	// Before the first attempt: in-flight reads 0.
	compare(t, m, gauges, map[string]float64{"relay_inflight_events": 0, "relay_inflight_bytes": 0, "relay_confirmed_lsn": 0, "relay_received_lsn": 0, "relay_replication_lag_seconds": 0})

	st.tr.Reset(1000)
	st.stats.ReceivedLSN.Store(5000)
	s1, _ := st.tr.TryReserve(100)
	st.tr.TryReserve(50)
	st.tr.Commit(2000, clock.Add(-1500*time.Millisecond))
	st.tr.Ack(s1)
	compare(t, m, gauges, map[string]float64{"relay_inflight_events": 1, "relay_inflight_bytes": 50, "relay_confirmed_lsn": 1000, "relay_received_lsn": 5000, "relay_replication_lag_seconds": 0})

	st.tr.Ack(s1 + 1)
	st.tr.MarkDurable(2000)
	compare(t, m, gauges, map[string]float64{"relay_inflight_events": 0, "relay_inflight_bytes": 0, "relay_confirmed_lsn": 2000, "relay_received_lsn": 5000, "relay_replication_lag_seconds": 1.5})

	// Idle and caught up: the lag is 0, not the age of the last transaction.
	st.tr.AdvanceIdle(6000)
	st.tr.MarkDurable(6000)
	compare(t, m, gauges, map[string]float64{"relay_inflight_events": 0, "relay_inflight_bytes": 0, "relay_confirmed_lsn": 6000, "relay_received_lsn": 5000, "relay_replication_lag_seconds": 0})

	// The confirmed position survives the next attempt's reset.
	st.tr.Reset(6000)
	compare(t, m, gauges, map[string]float64{"relay_inflight_events": 0, "relay_inflight_bytes": 0, "relay_confirmed_lsn": 6000, "relay_received_lsn": 5000, "relay_replication_lag_seconds": 0})
}

func compare(t *testing.T, m *Metrics, names []string, want map[string]float64) {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			if g := metric.GetGauge(); g != nil {
				got[mf.GetName()] = g.GetValue()
			}
		}
	}
	for _, n := range names {
		v, ok := got[n]
		if !ok {
			t.Errorf("%s missing", n)
			continue
		}
		if v != want[n] {
			t.Errorf("%s = %v, want %v", n, v, want[n])
		}
	}
}

func TestSlotLagExportedOnlyWhenSampled(t *testing.T) {
	m := New("dev")
	if n := testutil.CollectAndCount(&m.slotLag); n != 0 {
		t.Fatalf("slot lag exported before any sample: %d series", n)
	}
	lagIs(m, 4096, nil)
	if err := testutil.CollectAndCompare(&m.slotLag, strings.NewReader(`
# HELP relay_slot_lag_bytes WAL Postgres retains for the slot: pg_current_wal_lsn() - confirmed_flush_lsn, sampled when scraped.
# TYPE relay_slot_lag_bytes gauge
relay_slot_lag_bytes 4096
`)); err != nil {
		t.Error(err)
	}
	lagIs(m, 0, errors.New("connection refused"))
	if n := testutil.CollectAndCount(&m.slotLag); n != 0 {
		t.Fatalf("stale slot lag still exported: %d series", n)
	}
}

// lagIs makes the next scrape sample v and err.
func lagIs(m *Metrics, v int64, err error) {
	m.slotLag.sample = func(context.Context) (int64, error) { return v, err }
	m.slotLag.at = time.Time{}
}

func TestSlotLagSampledWhenScraped(t *testing.T) {
	m := New("dev")
	calls := 0
	var fail error
	m.slotLag.sample = func(ctx context.Context) (int64, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("slot lag sampled without a deadline")
		}
		calls++
		return int64(calls) * 100, fail
	}
	if v := testutil.ToFloat64(&m.slotLag); v != 100 || calls != 1 {
		t.Fatalf("first scrape: lag %v after %d samples, want 100 after 1", v, calls)
	}
	// A second scraper within slotLagMaxAge gets the same sample.
	if v := testutil.ToFloat64(&m.slotLag); v != 100 || calls != 1 {
		t.Fatalf("second scrape: lag %v after %d samples, want 100 after 1", v, calls)
	}
	m.slotLag.at = m.slotLag.at.Add(-slotLagMaxAge)
	if v := testutil.ToFloat64(&m.slotLag); v != 200 || calls != 2 {
		t.Fatalf("scrape after slotLagMaxAge: lag %v after %d samples, want 200 after 2", v, calls)
	}
	m.slotLag.at, fail = m.slotLag.at.Add(-slotLagMaxAge), errors.New("connection refused")
	if n := testutil.CollectAndCount(&m.slotLag); n != 0 || calls != 3 {
		t.Fatalf("failed sample: %d series after %d samples, want none after 3", n, calls)
	}
}

func TestScrapeHasEveryName(t *testing.T) {
	m := New("dev")
	m.Watch(&fakeState{tr: checkpoint.New(1, 1024, 0)})
	lagIs(m, 1, nil)
	m.Published(event("t", "x"), time.Millisecond)
	m.PublishError("other")
	body := scrape(t, m)
	for _, name := range []string{
		"relay_events_published_total", "relay_bytes_published_total", "relay_publish_errors_total",
		"relay_reconnects_total", "relay_inflight_events", "relay_inflight_bytes", "relay_confirmed_lsn",
		"relay_received_lsn", "relay_slot_lag_bytes", "relay_replication_lag_seconds",
		"relay_publish_latency_seconds", "relay_up", "relay_build_info", "go_goroutines",
	} {
		if !strings.Contains(body, "\n# TYPE "+name+" ") {
			t.Errorf("scrape has no %s", name)
		}
	}
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// TestPublishedDoesNotAllocate guards the per-event cost: once a (table,
// topic) pair has been seen, counting an event must not allocate.
func TestPublishedDoesNotAllocate(t *testing.T) {
	m := New("dev")
	ev := event("public.outbox", "outbox.event.Order")
	m.Published(ev, time.Millisecond)
	if n := testing.AllocsPerRun(1000, func() { m.Published(ev, time.Millisecond) }); n != 0 {
		t.Errorf("Published allocates %v times per event", n)
	}
}

func BenchmarkPublished(b *testing.B) {
	m := New("dev")
	evs := []*decode.Event{event("public.outbox", "a"), event("public.outbox", "b"), event("app.events", "c")}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Published(evs[i%len(evs)], time.Millisecond)
			i++
		}
	})
}
