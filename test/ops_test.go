package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// scrapeMetrics returns every sample of the exposition, summed per metric
// name (labels dropped), which is what these checks need.
func scrapeMetrics(addr string) (map[string]float64, error) {
	code, body, err := httpGet("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics: %d %s", code, body)
	}
	sums := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad sample %q: %w", line, err)
		}
		sums[name] += v
	}
	return sums, sc.Err()
}

// TestOpsMetricsAndHealth relays events with the HTTP endpoints on and checks
// what an operator would look at: the counters add up, nothing is left in
// flight, the LSN gauges move, both probes pass, and they keep passing while
// the relay idles past its stall timeout.
func TestOpsMetricsAndHealth(t *testing.T) {
	e := newEnv(t, envOpts{})
	addr := freeAddr(t)
	const stall = 3 * time.Second
	e.startRelay(e.config(fmt.Sprintf("http:\n  listen: %q\n", addr)), "RELAY_PIPELINE_STALL_TIMEOUT="+stall.String())
	e.waitStreaming("outbox_relay")

	const n = 240
	p := newProducer()
	conn := e.connect()
	ctx := context.Background()
	for i := 0; i < 8; i++ {
		if err := p.insert(ctx, conn, "public.outbox", n/8, keyed(20, i)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitDelivered(n, 60*time.Second, allTopics("outbox.event.")...)

	var m map[string]float64
	waitFor(t, 30*time.Second, "metrics to account for every acked event", func() bool {
		var err error
		m, err = scrapeMetrics(addr)
		return err == nil && m["relay_events_published_total"] == n && m["relay_inflight_events"] == 0 &&
			m["relay_slot_lag_bytes"] >= 0 && hasKey(m, "relay_slot_lag_bytes")
	})
	checks := []struct {
		name string
		ok   func(float64) bool
		want string
	}{
		{"relay_events_published_total", func(v float64) bool { return v == n }, fmt.Sprint(n)},
		{"relay_publish_latency_seconds_count", func(v float64) bool { return v == n }, fmt.Sprint(n)},
		{"relay_bytes_published_total", func(v float64) bool { return v > n*120 }, "> payload bytes"},
		{"relay_inflight_events", func(v float64) bool { return v == 0 }, "0"},
		{"relay_inflight_bytes", func(v float64) bool { return v == 0 }, "0"},
		{"relay_confirmed_lsn", func(v float64) bool { return v > 0 }, "> 0"},
		{"relay_received_lsn", func(v float64) bool { return v > 0 }, "> 0"},
		{"relay_up", func(v float64) bool { return v == 1 }, "1"},
		{"relay_build_info", func(v float64) bool { return v == 1 }, "1"},
		{"relay_replication_lag_seconds", func(v float64) bool { return v >= 0 && v < 60 }, "[0, 60)"},
		{"relay_slot_lag_bytes", func(v float64) bool { return v >= 0 }, ">= 0"},
	}
	for _, c := range checks {
		v, ok := m[c.name]
		if !ok || !c.ok(v) {
			t.Errorf("%s = %v (present %t), want %s", c.name, v, ok, c.want)
		}
	}
	if _, ok := m["relay_reconnects_total"]; !ok {
		t.Error("relay_reconnects_total missing")
	}
	if v := m["relay_publish_errors_total"]; v != 0 {
		t.Errorf("relay_publish_errors_total = %v, want none", v)
	}
	for _, path := range []string{"/readyz", "/healthz"} {
		code, body, err := httpGet("http://" + addr + path)
		if err != nil || code != 200 {
			t.Errorf("%s = %d %q %v", path, code, body, err)
		}
	}

	// Idle for longer than the stall timeout: liveness must hold, whatever
	// small tail of WAL the walsender has not yet let us confirm.
	deadline := time.Now().Add(2 * stall)
	for time.Now().Before(deadline) {
		code, body, err := httpGet("http://" + addr + "/healthz")
		if err != nil || code != 200 {
			t.Fatalf("/healthz while idle = %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m, err := scrapeMetrics(addr); err == nil {
		t.Logf("idle: received_lsn=%.0f confirmed_lsn=%.0f slot_lag_bytes=%.0f", m["relay_received_lsn"], m["relay_confirmed_lsn"], m["relay_slot_lag_bytes"])
	}

	// A second relay on the same slot is a hot standby: alive, not streaming,
	// and ready only when the probe accepts a standby.
	addr2 := freeAddr(t)
	e.startRelay(e.config(fmt.Sprintf("http:\n  listen: %q\n", addr2)))
	waitFor(t, 30*time.Second, "the second relay to report itself a hot standby", func() bool {
		code, _, err := httpGet("http://" + addr2 + "/readyz?standby=ok")
		return err == nil && code == 200
	})
	if code, body, err := httpGet("http://" + addr2 + "/readyz"); err != nil || code != 503 {
		t.Errorf("standby /readyz = %d %q %v, want 503", code, body, err)
	}
	if code, body, err := httpGet("http://" + addr2 + "/healthz"); err != nil || code != 200 {
		t.Errorf("standby /healthz = %d %q %v, want 200", code, body, err)
	}

	// relay status reads the same slot.
	out, code := runRelay(t, e.config(""), "status")
	t.Logf("relay status:\n%s", out)
	if code != 0 {
		t.Fatalf("relay status exited %d:\n%s", code, out)
	}
	for _, want := range []string{"lag_bytes:", "confirmed_lsn:", "active_pid:", "wal_status:    reserved"} {
		if !strings.Contains(out, want) {
			t.Errorf("relay status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "active_pid:    none") {
		t.Errorf("relay status shows no active pid while the relay streams:\n%s", out)
	}
}

func hasKey(m map[string]float64, k string) bool { _, ok := m[k]; return ok }

// runRelay runs a one-shot relay subcommand with cfgYAML and returns its
// combined output and exit code.
func runRelay(t *testing.T, cfgYAML string, args ...string) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relayBin, append(args, "--config", path)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running relay %v: %v\n%s", args, err, out)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// failedLines returns the ✗ lines of a relay check output.
func failedLines(out string) []string {
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "✗ ") {
			bad = append(bad, l)
		}
	}
	return bad
}

// TestCheck runs `relay check` against a healthy setup and against each
// problem it must name, on one cluster with wal_level=logical.
func TestCheck(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(`CREATE TABLE public.nopayload (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text)`, e.db)
	e.exec(`CREATE TABLE public.intpayload (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload integer)`, e.db)
	e.exec(`CREATE ROLE norepl LOGIN`, e.db)

	t.Run("all-ok", func(t *testing.T) {
		out, code := runRelay(t, e.config(""), "check")
		t.Logf("relay check:\n%s", out)
		if code != 0 || len(failedLines(out)) > 0 {
			t.Fatalf("relay check exited %d on a healthy setup:\n%s", code, out)
		}
		for _, want := range []string{"✓ config:", "✓ postgres: connected", "✓ wal_level: logical", "✓ role: postgres may stream",
			"✓ table public.outbox:", "✓ publication outbox_relay: does not exist yet", "✓ slot outbox_relay: does not exist yet",
			"✓ kafka: connected", "✓ topics outbox.event.${routedByValue}:", "all checks passed"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	cases := []struct {
		name  string
		cfg   string
		wants []string // each must appear in a ✗ line
	}{
		{"missing-table", e.config("outbox:\n  - table: public.nosuch\n"),
			[]string{"✗ table public.nosuch: outbox table public.nosuch does not exist"}},
		{"missing-column", e.config("outbox:\n  - table: public.nopayload\n"),
			[]string{`✗ table public.nopayload: outbox table public.nopayload has no column "payload" (outbox.columns.payload)`}},
		{"bad-type", e.config("outbox:\n  - table: public.intpayload\n"),
			[]string{`✗ table public.intpayload: outbox table public.intpayload: column "payload" (outbox.columns.payload) is integer, payload needs jsonb, json, bytea, text or varchar`}},
		{"missing-topic", e.config("outbox:\n  - table: public.outbox\n    topic: fixed.events\n"),
			[]string{"✗ topic fixed.events: does not exist"}},
		{"no-replication", strings.Replace(e.config(""), e.url(), e.pg.URL("norepl", e.db), 1),
			[]string{`✗ role: role "norepl" lacks the REPLICATION privilege`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := runRelay(t, c.cfg, "check")
			t.Logf("relay check:\n%s", out)
			if code == 0 {
				t.Errorf("relay check exited 0:\n%s", out)
			}
			bad := strings.Join(failedLines(out), "\n")
			for _, w := range c.wants {
				if !strings.Contains(bad, w) {
					t.Errorf("no ✗ line with %q:\n%s", w, out)
				}
			}
			if !strings.Contains(out, "    fix: ") {
				t.Errorf("no fix hint:\n%s", out)
			}
		})
	}
}

// TestCheckWALLevelReplica runs `relay check` against a cluster that cannot
// decode logically.
func TestCheckWALLevelReplica(t *testing.T) {
	e := newEnv(t, envOpts{pgSettings: map[string]string{"wal_level": "replica"}})
	out, code := runRelay(t, e.config(""), "check")
	t.Logf("relay check:\n%s", out)
	if code == 0 {
		t.Errorf("relay check exited 0:\n%s", out)
	}
	bad := failedLines(out)
	if len(bad) != 1 || !strings.HasPrefix(bad[0], `✗ wal_level: postgres wal_level is "replica"`) {
		t.Errorf("want exactly one ✗ line, for wal_level:\n%s", out)
	}
	if !strings.Contains(out, "fix: set wal_level = logical") {
		t.Errorf("no fix hint for wal_level:\n%s", out)
	}
}

// TestOpsPasswordNeverLogged runs the relay, relay check and relay status
// with a wrong password against a server that demands one: the password must
// appear nowhere in what they print.
func TestOpsPasswordNeverLogged(t *testing.T) {
	const secret = "hunter2-secret"
	pg := devenvtest.Postgres(t, devenv.PostgresOptions{HBA: []string{"host all pwuser 127.0.0.1/32 scram-sha-256"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.Exec(ctx, `CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'the-right-one'`); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(pg.URL("pwuser", "postgres"), "pwuser@", "pwuser:"+secret+"@", 1)
	// The key=value form pgx also accepts, with the password quoted as a
	// libpq DSN allows.
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=pwuser password='%s' dbname=postgres sslmode=disable", pg.Port(), secret)

	for _, conn := range []struct{ form, url string }{{"url", url}, {"dsn", dsn}} {
		cfg := fmt.Sprintf("postgres:\n  url: %q\nkafka:\n  brokers: [%q]\nlog:\n  level: debug\n", conn.url, freeAddr(t))
		for _, sub := range []string{"run", "check", "status"} {
			out, code := runRelay(t, cfg, sub)
			if code == 0 {
				t.Errorf("relay %s (%s) exited 0 with a wrong password:\n%s", sub, conn.form, out)
			}
			if !strings.Contains(out, "password authentication failed") {
				t.Errorf("relay %s (%s) does not say why it failed:\n%s", sub, conn.form, out)
			}
			if strings.Contains(out, secret) || strings.Contains(out, "hunter2") {
				t.Errorf("relay %s (%s) printed the password:\n%s", sub, conn.form, out)
			}
		}
	}
}
