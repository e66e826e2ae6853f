package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relay-dev/relay/pkg/snapshot"
)

// WatchSnapshot registers the gauges of the initial snapshot's progress.
// Call it once, before serving.
func (m *Metrics) WatchSnapshot(p *snapshot.Progress) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		gauge("relay_snapshot_running", "1 while an initial snapshot reads outbox tables.", func() float64 {
			if p.Running.Load() {
				return 1
			}
			return 0
		}),
		gauge("relay_snapshot_rows", "Rows the current or latest snapshot handed to the producer.", func() float64 { return float64(p.RowsDone.Load()) }),
		gauge("relay_snapshot_rows_estimate", "Rows the current or latest snapshot expects (pg_class.reltuples; 0 when unknown).", func() float64 { return float64(p.RowsTotal.Load()) }),
	)
}
