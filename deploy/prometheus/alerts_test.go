package prometheus_test

import (
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/logrepl"
	"github.com/relay-dev/relay/pkg/metrics"
)

// promtool finds promtool (Debian package prometheus; .ci/ensure-promtool
// installs it). Outside CI a missing promtool skips; in CI it fails, so the
// rules cannot go unchecked there by accident.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found and CI is set: install the Debian package prometheus (.ci/ensure-promtool)")
		}
		t.Skip("promtool not found (apt-get install prometheus); CI runs this")
	}
	return p
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "alerts.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestPromtoolTestRules runs the rule unit tests: each alert that reads a
// labelled counter or the stall condition fires on the series it should.
func TestPromtoolTestRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "test", "rules", "alerts_test.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

type state struct{ stats logrepl.Stats }

func (s *state) Tracker() *checkpoint.Tracker { return checkpoint.New(1, 1024, 0) }
func (s *state) Stream() *logrepl.Stats       { return &s.stats }

// TestRulesUseExistingMetrics keeps the rules in step with pkg/metrics: a
// renamed metric would leave an alert that can never fire. Every metric the
// rules read must exist from start-up, before any event or error.
func TestRulesUseExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test")
	m.Watch(&state{})
	m.Sources([]string{"public.outbox"})
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	// The slot lag is exported only once sampled from Postgres.
	known := map[string]bool{"relay_slot_lag_bytes": true}
	for _, mf := range mfs {
		if len(mf.GetMetric()) > 0 {
			known[mf.GetName()] = true
		}
	}
	names := regexp.MustCompile(`relay_[a-z_]+`).FindAllString(string(raw), -1)
	if len(names) == 0 {
		t.Fatal("no relay_ metric in alerts.yaml")
	}
	for _, n := range names {
		if !known[n] {
			t.Errorf("alerts.yaml reads %s, which the relay does not export at start-up", n)
		}
	}
}
