package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/metrics"
	"github.com/relay-dev/relay/pkg/pipeline"
)

// startHTTP serves /healthz, /readyz and /metrics when http.listen is set, and
// runs the watchers behind them. The returned func stops all of it.
func startHTTP(cfg *config.Config, p *pipeline.Pipeline, m *metrics.Metrics, log zerolog.Logger) (func(), error) {
	if cfg.HTTP.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	watch := newStallWatch(p, cfg.Pipeline.StallTimeout)
	wg.Add(1)
	go func() { defer wg.Done(); watch.run(ctx) }()
	stopLag := m.SampleSlotLag(cfg.Postgres, log)

	mux := healthMux(p, watch, m)
	if cfg.HTTP.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http server stopped")
		}
	}()
	log.Info().Str("listen", ln.Addr().String()).Msg("serving /healthz, /readyz and /metrics")
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
		wg.Wait()
		stopLag()
	}, nil
}

// readiness is what /readyz needs from the pipeline.
type readiness interface {
	metrics.State
	KafkaConnected() bool
	Standby() bool
}

func healthMux(p readiness, watch *stallWatch, m *metrics.Metrics) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if why := watch.stalled(time.Now()); why != "" {
			http.Error(w, "stalled: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		streaming, kafka := p.Stream().Streaming.Load(), p.KafkaConnected()
		// A hot standby never streams, so with plain /readyz a Deployment
		// rollout would wait for it forever and a PodDisruptionBudget would
		// never let the active pod go; ?standby=ok counts it as ready.
		if !streaming && p.Standby() && r.URL.Query().Get("standby") == "ok" {
			fmt.Fprintln(w, "ok: hot standby, waiting for the slot held by another relay")
			return
		}
		if !streaming || !kafka {
			http.Error(w, fmt.Sprintf("not ready: replication stream established=%t, kafka connected=%t", streaming, kafka), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", m.Handler())
	return mux
}

// stallWatch decides whether the pipeline is wedged: work is pending and
// nothing has moved for longer than the stall timeout. Only then is a restart
// by the liveness probe worth it; a relay that waits for Postgres or Kafka, or
// a hot standby waiting for the slot, has nothing pending and stays live.
//
// It samples on a ticker rather than at request time because in-flight counts
// rise and fall between probes; comparing two probe-time snapshots would blame
// a burst that started just before the second probe for the whole interval.
type stallWatch struct {
	src   metrics.State
	limit time.Duration

	mu    sync.Mutex
	prev  snapshot
	okAt  time.Time // newest time with nothing pending or with progress
	why   string    // what is pending, for the 503 body
	first bool
}

type snapshot struct {
	attempt   int
	inflight  int
	acked     uint64
	confirmed pglogrepl.LSN
	received  pglogrepl.LSN
	streaming bool
	touched   int64
}

func newStallWatch(src metrics.State, limit time.Duration) *stallWatch {
	return &stallWatch{src: src, limit: limit, first: true}
}

func (w *stallWatch) run(ctx context.Context) {
	// Ten samples per timeout keep the verdict within 10% of it; sampling
	// more often would only wake an idle relay.
	every := max(w.limit/10, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		w.observe(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *stallWatch) take() snapshot {
	st := w.src.Stream()
	s := snapshot{
		received:  pglogrepl.LSN(st.ReceivedLSN.Load()),
		streaming: st.Streaming.Load(),
		touched:   st.LastProgress.Load(),
		confirmed: w.prev.confirmed,
	}
	if tr := w.src.Tracker(); tr != nil {
		ts := tr.Stats()
		s.attempt, s.inflight, s.acked, s.confirmed = ts.Attempt, ts.InflightEvents, ts.AckedEvents, ts.Confirmed
	}
	return s
}

func (w *stallWatch) observe(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.take()
	prev := w.prev
	w.prev = cur
	if w.first {
		w.first, w.okAt = false, now
		return
	}
	var pending string
	switch {
	case cur.inflight > 0:
		pending = fmt.Sprintf("%d events in flight", cur.inflight)
	case cur.streaming && cur.received > cur.confirmed:
		pending = fmt.Sprintf("received WAL up to %d but confirmed only %d", cur.received, cur.confirmed)
	}
	progress := cur.attempt != prev.attempt || cur.confirmed != prev.confirmed || cur.acked != prev.acked ||
		// With nothing in flight the only unconfirmed WAL is the tail the
		// walsender has not yet reported past (its keepalives confirm it), so
		// a replication loop that still heartbeats is waiting, not wedged.
		(cur.inflight == 0 && cur.touched != prev.touched)
	if pending == "" || progress {
		w.okAt = now
	}
	w.why = pending
}

// stalled returns why the pipeline is wedged, or "" when it is not.
func (w *stallWatch) stalled(now time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first || w.why == "" {
		return ""
	}
	if d := now.Sub(w.okAt); d > w.limit {
		return fmt.Sprintf("%s and no progress for %s (pipeline.stall_timeout %s)", w.why, d.Round(time.Second), w.limit)
	}
	return ""
}
