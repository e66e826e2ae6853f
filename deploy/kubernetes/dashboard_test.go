package kubernetes_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/logrepl"
	"github.com/relay-dev/relay/pkg/metrics"
)

type state struct{ stats logrepl.Stats }

func (s *state) Tracker() *checkpoint.Tracker { return checkpoint.New(1, 1024, 0) }
func (s *state) Stream() *logrepl.Stats       { return &s.stats }

// TestDashboardQueriesExistingMetrics keeps the Grafana dashboard in step with
// pkg/metrics: a renamed metric would otherwise leave a silently empty panel.
func TestDashboardQueriesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("../grafana/relay.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("relay.json: %v", err)
	}

	m := metrics.New("test")
	m.Watch(&state{})
	m.Published(&decode.Event{Table: "t", Topic: "x"}, time.Millisecond)
	m.PublishError("other")
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	// The slot lag is exported only once sampled from Postgres.
	known := map[string]bool{"relay_slot_lag_bytes": true}
	for _, mf := range mfs {
		known[mf.GetName()] = true
	}

	name := regexp.MustCompile(`relay_[a-z_]+`)
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			for _, n := range name.FindAllString(tg.Expr, -1) {
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && known[b] {
						base = b
					}
				}
				if !known[base] {
					t.Errorf("panel %q queries %s, which the relay does not export", p.Title, n)
				}
			}
		}
	}
	if queries == 0 {
		t.Fatal("dashboard has no queries")
	}
}
