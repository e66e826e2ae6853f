package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/internal/devenv"
)

const (
	dbName        = "bench"
	slotName      = "outbox_relay"
	twinSlot      = "twin"
	twinAfterSlot = "twin_after"
	publication   = "outbox_relay"
	// pollEvery is how often deliveries are counted while timing a drain:
	// it is the resolution of the relay's drain time.
	pollEvery = 20 * time.Millisecond
)

// aggregateTypes are the route-by values, so each is a topic.
var aggregateTypes = []string{"Order", "Customer", "Payment", "Shipment"}

func topics() []string {
	ts := make([]string, len(aggregateTypes))
	for i, a := range aggregateTypes {
		ts[i] = "outbox.event." + a
	}
	return ts
}

// world is one throwaway Postgres with the outbox schema and one broker.
type world struct {
	pg    *devenv.Postgres
	kafka *devenv.Kafka
	// broker, when set, is the broker in a child process instead of kafka.
	broker *brokerChild
	parts  int
	dir    string // relay configs
}

func newWorld(ctx context.Context, o *options) (w *world, err error) {
	w = &world{parts: o.partitions}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.dir, err = os.MkdirTemp("", "relaybench-"); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// devenv keeps synchronous_commit on, as production does; only fsync is
	// off, which a benchmark on a shared disk is better without anyway.
	if w.pg, err = devenv.StartPostgres(sctx, devenv.PostgresOptions{}); err != nil {
		return nil, err
	}
	if err = w.pg.Exec(sctx, "CREATE DATABASE "+dbName); err != nil {
		return nil, err
	}
	if err = w.exec(sctx, devenv.OutboxDDL("public.outbox")); err != nil {
		return nil, err
	}
	if err = w.exec(sctx, "CREATE PUBLICATION "+publication+" FOR TABLE public.outbox WITH (publish = 'insert')"); err != nil {
		return nil, err
	}
	if err = w.restartKafka(); err != nil {
		return nil, err
	}
	return w, nil
}

// restartKafka replaces the broker with an empty one, so each timed run
// starts with no topics and counts from zero.
func (w *world) restartKafka() error {
	if w.kafka != nil {
		w.kafka.Close()
		w.kafka = nil
	}
	k, err := devenv.StartKafka(devenv.KafkaOptions{Partitions: w.parts})
	if err != nil {
		return err
	}
	w.kafka = k
	return nil
}

func (w *world) close() {
	if w.kafka != nil {
		w.kafka.Close()
	}
	if w.broker != nil {
		w.broker.close()
	}
	if w.pg != nil {
		if err := w.pg.Close(); err != nil {
			logf("closing PostgreSQL: %v", err)
		}
	}
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}

// addr is the broker's address, wherever it runs.
func (w *world) addr() string {
	if w.broker != nil {
		return w.broker.addr
	}
	return w.kafka.Addr()
}

func (w *world) url() string { return w.pg.URL("postgres", dbName) }

func (w *world) connect(ctx context.Context) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, w.url())
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return conn, nil
}

func (w *world) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", firstLine(sql), err)
	}
	return nil
}

func (w *world) queryRow(ctx context.Context, sql string, args []any, dest ...any) error {
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		return fmt.Errorf("%s: %w", firstLine(sql), err)
	}
	return nil
}

// createSlots creates the slots one after the other with nothing written in
// between, so every slot decodes from the same point.
func (w *world) createSlots(ctx context.Context, names ...string) error {
	for _, s := range names {
		if err := w.exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", s); err != nil {
			return err
		}
	}
	return nil
}

func (w *world) dropSlots(ctx context.Context, names ...string) error {
	for _, s := range names {
		if err := w.exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", s); err != nil {
			return err
		}
	}
	return nil
}

func (w *world) currentLSN(ctx context.Context) (string, error) {
	var lsn string
	err := w.queryRow(ctx, "SELECT pg_current_wal_lsn()::text", nil, &lsn)
	return lsn, err
}

func (w *world) serverVersion(ctx context.Context) string {
	var v string
	if err := w.queryRow(ctx, "SHOW server_version", nil, &v); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return v
}

// count is the number of records on the outbox topics.
func (w *world) count(ctx context.Context) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return devenv.CountRecords(cctx, w.addr(), topics()...)
}

// relayConfig writes a config for the relay binary and returns its path and
// the metrics address.
func (w *world) relayConfig(name string) (path, httpAddr string, err error) {
	return w.relayConfigWith(name, false)
}

// relayConfigWith can also turn on /debug/pprof, which costs nothing until
// a profile is asked for.
func (w *world) relayConfigWith(name string, pprof bool) (path, httpAddr string, err error) {
	httpAddr, err = freeAddr()
	if err != nil {
		return "", "", err
	}
	// Everything else stays at the relay's defaults, so the figures are
	// those of an out-of-the-box deployment.
	cfg := fmt.Sprintf(`postgres:
  url: %s
  slot: %s
  publication: %s
kafka:
  brokers: [%q]
outbox:
  - table: public.outbox
http:
  listen: %q
  pprof: %t
log:
  level: warn
`, w.url(), slotName, publication, w.addr(), httpAddr, pprof)
	path = filepath.Join(w.dir, name+".yaml")
	return path, httpAddr, os.WriteFile(path, []byte(cfg), 0o600)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// relayEnv is added to the relay's environment (-relay-env), e.g. to try
// GOMAXPROCS or GOGC settings without rebuilding.
var relayEnv []string

// relayProc is a running relay binary.
type relayProc struct {
	cmd      *exec.Cmd
	out      *tailWriter
	httpAddr string
	started  time.Time
	done     chan struct{}
	err      error
}

func startRelay(bin, cfgPath, httpAddr string) (*relayProc, error) {
	r := &relayProc{out: newTail(16 << 10), httpAddr: httpAddr, done: make(chan struct{})}
	r.cmd = exec.Command(bin, "run", "--config", cfgPath)
	if len(relayEnv) > 0 {
		r.cmd.Env = append(os.Environ(), relayEnv...)
	}
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	// Pdeathsig kills the relay if we die without cleaning up (kill -9),
	// so it cannot keep holding a slot of a dead cluster.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r.started = time.Now()
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

func (r *relayProc) pid() int { return r.cmd.Process.Pid }

// exited returns an error describing the exit if the relay is no longer
// running: the benchmark needs it to be.
func (r *relayProc) exited() error {
	select {
	case <-r.done:
		return fmt.Errorf("relay exited (%w); output tail:\n%s", r.err, r.out.String())
	default:
		return nil
	}
}

// stop asks for a clean stop and kills the relay if it does not come.
func (r *relayProc) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		logf("relay did not stop within 30s of SIGTERM; killing it")
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// cpu returns the relay's user+system CPU time; valid once it has exited.
func (r *relayProc) cpu() time.Duration {
	if r.cmd.ProcessState == nil {
		return 0
	}
	return r.cmd.ProcessState.UserTime() + r.cmd.ProcessState.SystemTime()
}

// metric sums the samples of one metric family from the relay's /metrics.
func (r *relayProc) metric(ctx context.Context, name string) (float64, error) {
	m, err := r.metrics(ctx, name)
	return m[name], err
}

// scrape fetches the relay's /metrics page.
func (r *relayProc) scrape(ctx context.Context) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+r.httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// metrics reads several families in one scrape.
func (r *relayProc) metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	b, err := r.scrape(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(names))
	for _, n := range names {
		if out[n], err = sumMetric(bytes.NewReader(b), n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// histogram reads a histogram's cumulative bucket counts (by upper bound,
// +Inf included), summed over label sets.
func (r *relayProc) histogram(ctx context.Context, name string) (map[float64]float64, error) {
	b, err := r.scrape(ctx)
	if err != nil {
		return nil, err
	}
	return parseBuckets(bytes.NewReader(b), name)
}

func parseBuckets(r io.Reader, name string) (map[float64]float64, error) {
	out := map[float64]float64{}
	sc := bufio.NewScanner(r)
	prefix := name + "_bucket{"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		_, after, ok := strings.Cut(line, `le="`)
		if !ok {
			continue
		}
		leText, _, _ := strings.Cut(after, `"`)
		le, err := strconv.ParseFloat(leText, 64) // ParseFloat reads "+Inf"
		if err != nil {
			return nil, fmt.Errorf("bucket bound in %q: %w", line, err)
		}
		f := strings.Fields(line[strings.LastIndexByte(line, '}')+1:])
		if len(f) == 0 {
			return nil, fmt.Errorf("metric line %q has no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		out[le] += v
	}
	return out, sc.Err()
}

// bucketQuantile returns the upper bound of the bucket holding quantile q
// of the observations made between two readings of a histogram: a bound,
// not an estimate, since the buckets are coarse.
func bucketQuantile(before, after map[float64]float64, q float64) (bound float64, n float64) {
	les := slices.Sorted(maps.Keys(after))
	if len(les) == 0 {
		return 0, 0
	}
	n = after[les[len(les)-1]] - before[les[len(les)-1]]
	if n <= 0 {
		return 0, 0
	}
	for _, le := range les {
		if after[le]-before[le] >= q*n {
			return le, n
		}
	}
	return les[len(les)-1], n
}

// sumMetric adds up the samples of the named family in the Prometheus text
// format; a family with no samples is 0.
func sumMetric(r io.Reader, name string) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" {
			continue
		}
		switch rest[0] {
		case '{':
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		case ' ':
		default:
			continue // another family sharing the prefix
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("metric line %q has no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// waitUntil polls cond every interval until it reports done, fails, the
// relay dies, or the timeout passes; what names the wait in errors.
func waitUntil(ctx context.Context, r *relayProc, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if r != nil {
			if err := r.exited(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// waitActive waits until the relay holds its slot: it is streaming.
func (w *world) waitActive(ctx context.Context, r *relayProc, timeout time.Duration) error {
	return waitUntil(ctx, r, timeout, 100*time.Millisecond, "the relay to stream from slot "+slotName, func() (bool, error) {
		var active bool
		err := w.queryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", []any{slotName}, &active)
		return err == nil && active, err
	})
}

// procStatus reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusField(string(b), field)
}

func parseStatusField(status, field string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == field+":" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s %q: %w", field, f[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// peakRSS tracks the relay's VmHWM across samples: the last reading before
// the process exits is the peak, so callers sample up to the end.
type peakRSS struct {
	pid  int
	peak int64
}

func (p *peakRSS) sample() {
	if v, err := procStatus(p.pid, "VmHWM"); err == nil && v > p.peak {
		p.peak = v
	}
}

// tailWriter keeps the last bytes of a process's output, for error messages.
type tailWriter struct{ devenv.Tail }

func newTail(max int) *tailWriter { return &tailWriter{devenv.Tail{Max: max}} }

func (t *tailWriter) String() string {
	if s := strings.TrimSpace(t.Tail.String()); s != "" {
		return s
	}
	return "(no output)"
}

// lines counts output lines, here the relay's warnings.
func (t *tailWriter) lines() int {
	return strings.Count(t.Tail.String(), "\n")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	return s
}

var errNoRecvlogical = errors.New("pg_recvlogical not found (install the postgresql or postgresql-client package)")

// findRecvlogical prefers the server's own version over whatever is on PATH.
func findRecvlogical() (string, error) {
	for _, p := range []string{"/usr/lib/postgresql/15/bin/pg_recvlogical", "/usr/bin/pg_recvlogical"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("pg_recvlogical"); err == nil {
		return p, nil
	}
	return "", errNoRecvlogical
}

// startSection starts a section's own Postgres and broker with the relay's
// slot created, noting the server version once.
func startSection(ctx context.Context, o *options, res *results, section string) (*world, error) {
	logf("%s: starting PostgreSQL and Kafka", section)
	w, err := newWorld(ctx, o)
	if err != nil {
		return nil, err
	}
	if res.pgVersion == "" {
		res.pgVersion = w.serverVersion(ctx)
	}
	if err := w.createSlots(ctx, slotName); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}
