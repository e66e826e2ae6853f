// Package metrics exposes the relay's Prometheus metrics from a private
// registry: counters and a latency histogram fed per event through the
// pipeline's Observer hooks, and gauges read from the pipeline's live state
// (tracker, stream, slot) only when Prometheus scrapes.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/logrepl"
)

// State is the live pipeline state read at scrape time; *pipeline.Pipeline
// implements it.
type State interface {
	Tracker() *checkpoint.Tracker
	Stream() *logrepl.Stats
}

// Metrics owns the registry and implements pipeline.Observer.
type Metrics struct {
	reg        *prometheus.Registry
	published  *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	errors     *prometheus.CounterVec
	reconnects *prometheus.CounterVec
	latency    prometheus.Histogram
	deadLetter *prometheus.CounterVec // by table only: an event id or topic label would grow without bound and carry data
	slotLag    slotLag

	// children is a copy-on-write map: Published runs once per acked event
	// on sarama's success goroutine and must not lock or allocate, while new
	// (table, topic) pairs are rare and may pay for a copy.
	children atomic.Pointer[map[pubKey]*pubChildren]
	mu       sync.Mutex // serialises writers of children

	now func() time.Time
}

type pubKey struct{ table, topic string }

type pubChildren struct {
	events prometheus.Counter
	bytes  prometheus.Counter
}

// New returns metrics registered in a fresh registry, labelled with the
// relay's build version.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_events_published_total",
			Help: "Events acknowledged by Kafka, by outbox table and topic.",
		}, []string{"table", "topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_bytes_published_total",
			Help: "Key, value and header bytes of events acknowledged by Kafka, by outbox table.",
		}, []string{"table"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_publish_errors_total",
			Help: "Events Kafka refused after the producer's retries; each restarts the pipeline.",
		}, []string{"reason"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_reconnects_total",
			Help: "Pipeline restarts caused by a component's failure (postgres or kafka).",
		}, []string{"component"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_publish_latency_seconds",
			Help:    "Time from handing an event to the producer until Kafka acknowledged it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_dead_letter_total",
			Help: "Events that could not be published as they are (kafka.on_unpublishable: dead_letter) sent to kafka.dead_letter_topic instead, by outbox table.",
		}, []string{"table"}),
		now: time.Now,
	}
	empty := map[pubKey]*pubChildren{}
	m.children.Store(&empty)
	// Both components appear from the start so rate() and alerts see a zero
	// rather than an absent series before the first failure.
	m.reconnects.WithLabelValues("postgres")
	m.reconnects.WithLabelValues("kafka")
	for _, r := range publishReasons {
		m.errors.WithLabelValues(r)
	}

	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_up", Help: "1 while the relay process runs."})
	up.Set(1)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "relay_build_info", Help: "Always 1; the version label identifies the build."}, []string{"version"})
	info.WithLabelValues(version).Set(1)

	m.reg.MustRegister(m.published, m.bytes, m.errors, m.reconnects, m.latency, m.deadLetter, up, info, &m.slotLag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// publishReasons are the reason labels the sink gives errors that carry no
// Kafka error code; Kafka's own codes (by their text) appear on first use.
var publishReasons = []string{"out_of_brokers", "message_too_large", "other"}

// Sources creates the per-table series at zero for the configured outbox
// tables and message sources (decode.Event.Table values: the table name, or
// "message:<prefix>"), so that increase() and rate() over them see the first
// event rather than an absent series turning into 1.
func (m *Metrics) Sources(tables []string) {
	for _, t := range tables {
		m.deadLetter.WithLabelValues(t)
		m.bytes.WithLabelValues(t)
	}
}

// Watch registers the gauges derived from s. Call it once, before serving.
func (m *Metrics) Watch(s State) {
	m.reg.MustRegister(&stateCollector{state: s, now: m.now})
}

// Registry returns the private registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Published counts an acknowledged event and its latency.
func (m *Metrics) Published(ev *decode.Event, latency time.Duration) {
	c := m.child(ev.Table, ev.Topic)
	c.events.Inc()
	n := len(ev.Key) + len(ev.Value)
	for i := range ev.Headers {
		n += len(ev.Headers[i].Key) + len(ev.Headers[i].Value)
	}
	c.bytes.Add(float64(n))
	m.latency.Observe(latency.Seconds())
}

func (m *Metrics) child(table, topic string) *pubChildren {
	if c, ok := (*m.children.Load())[pubKey{table, topic}]; ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.children.Load()
	k := pubKey{table, topic}
	if c, ok := old[k]; ok {
		return c
	}
	next := make(map[pubKey]*pubChildren, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	c := &pubChildren{events: m.published.WithLabelValues(table, topic), bytes: m.bytes.WithLabelValues(table)}
	next[k] = c
	m.children.Store(&next)
	return c
}

// PublishError counts an event Kafka refused.
func (m *Metrics) PublishError(reason string) { m.errors.WithLabelValues(reason).Inc() }

// DeadLettered counts an event routed to the dead letter topic
// (sink.DeadLetterObserver).
func (m *Metrics) DeadLettered(table string) { m.deadLetter.WithLabelValues(table).Inc() }

// Reconnect counts a pipeline restart caused by component.
func (m *Metrics) Reconnect(component string) { m.reconnects.WithLabelValues(component).Inc() }

// stateCollector takes one snapshot of the tracker per scrape so the in-flight
// and LSN gauges agree with each other.
type stateCollector struct {
	state State
	now   func() time.Time
}

var (
	descInflightEvents = prometheus.NewDesc("relay_inflight_events", "Events handed to Kafka and not yet acknowledged.", nil, nil)
	descInflightBytes  = prometheus.NewDesc("relay_inflight_bytes", "Approximate memory held by unacknowledged events.", nil, nil)
	descConfirmedLSN   = prometheus.NewDesc("relay_confirmed_lsn", "WAL position confirmed to Postgres as flushed, as a number.", nil, nil)
	descReceivedLSN    = prometheus.NewDesc("relay_received_lsn", "Position of the newest WAL data received from Postgres (a change's LSN, a commit's end), as a number.", nil, nil)
	descReplLag        = prometheus.NewDesc("relay_replication_lag_seconds", "Now minus the commit time of the newest fully acknowledged transaction; 0 when idle and caught up.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInflightEvents
	ch <- descInflightBytes
	ch <- descConfirmedLSN
	ch <- descReceivedLSN
	ch <- descReplLag
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.state.Tracker().Stats()
	lag := 0.0
	if !st.LastCommit.IsZero() {
		lag = max(c.now().Sub(st.LastCommit).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(descInflightEvents, prometheus.GaugeValue, float64(st.InflightEvents))
	ch <- prometheus.MustNewConstMetric(descInflightBytes, prometheus.GaugeValue, float64(st.InflightBytes))
	ch <- prometheus.MustNewConstMetric(descConfirmedLSN, prometheus.GaugeValue, float64(st.Confirmed))
	ch <- prometheus.MustNewConstMetric(descReceivedLSN, prometheus.GaugeValue, float64(c.state.Stream().ReceivedLSN.Load()))
	ch <- prometheus.MustNewConstMetric(descReplLag, prometheus.GaugeValue, lag)
}
