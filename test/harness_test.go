// Package test holds the relay's end-to-end and fault tests: each runs the real
// relay binary as a subprocess against a real PostgreSQL (devenv: 15 unless
// RELAY_TEST_PG_VERSION says otherwise) and a kfake Kafka broker reached over
// TCP, and checks what reached Kafka with an independent client (franz-go),
// never with sarama, the relay's own client.
package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
	"github.com/relay-dev/relay/internal/testutil"
)

var relayBin string

// javaPartition is the partition the Java client's default partitioner picks
// for a non-null key, as franz-go computes it: a reference independent of the
// relay's own partitioner.
func javaPartition(key []byte, partitions int32) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: key}, int(partitions)))
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-bin-")
	if err != nil {
		panic(err)
	}
	relayBin = filepath.Join(dir, "relay")
	// The binary is built without -race: the fault tests need realistic
	// throughput, and the packages' own tests run under the race detector.
	out, err := exec.Command("go", "build", "-o", relayBin, "../cmd/relay").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building relay: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: a Postgres cluster, a broker and a database with an
// outbox table.
type env struct {
	t     *testing.T
	pg    *devenv.Postgres
	kafka *devenv.Kafka
	db    string
	parts int32
	dsn   string // when set, what url returns (a multi-host URL)
}

type envOpts struct {
	pgSettings map[string]string
	kafkaDir   bool // persist the broker so it can be restarted
	pgVersion  int  // PostgreSQL major version; 0 is the default (15)
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, db: "app", parts: 3}
	e.pg = devenvtest.Postgres(t, devenv.PostgresOptions{Settings: o.pgSettings, Version: o.pgVersion})
	t.Logf("PostgreSQL %d on port %d", e.pg.Version(), e.pg.Port())
	ko := devenv.KafkaOptions{Partitions: int(e.parts)}
	if o.kafkaDir {
		ko.DataDir = t.TempDir()
	}
	e.kafka = devenvtest.Kafka(t, ko)
	e.exec("CREATE DATABASE app", "postgres")
	e.exec(devenv.OutboxDDL("public.outbox"), e.db)
	return e
}

func (e *env) url() string {
	if e.dsn != "" {
		return e.dsn
	}
	return e.pg.URL("postgres", e.db)
}

func (e *env) exec(sql, db string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.pg.URL("postgres", db))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// scan runs a one-row query on the app database.
func (e *env) scan(sql string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.url())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// config returns a relay.yaml for this env with extra YAML appended.
func (e *env) config(extra string) string {
	return fmt.Sprintf(`postgres:
  url: %s
kafka:
  brokers: ["%s"]
pipeline:
  status_interval: 200ms
  drain_timeout: 20s
  max_backoff: 2s
log:
  level: debug
%s`, e.url(), e.kafka.Addr(), extra)
}

// relay is a running relay subprocess.
type relay struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *testutil.Buffer
	done chan struct{}
	err  error
}

func (e *env) startRelay(cfgYAML string, extraEnv ...string) *relay {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o600); err != nil {
		e.t.Fatal(err)
	}
	r := &relay{t: e.t, out: &testutil.Buffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(relayBin, "run", "--config", path)
	r.cmd.Stdout = r.out
	r.cmd.Stderr = r.out
	r.cmd.Env = append(os.Environ(), extraEnv...)
	if err := r.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	e.t.Cleanup(func() {
		r.kill()
		if e.t.Failed() {
			e.t.Logf("relay output:\n%s", tail(r.out.String(), 60))
		}
	})
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *relay) kill() {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// stop sends SIGTERM and returns the exit code.
func (r *relay) stop(timeout time.Duration) int {
	r.t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(timeout):
		r.t.Fatalf("relay did not exit within %s of SIGTERM", timeout)
	}
	return r.cmd.ProcessState.ExitCode()
}

// wait waits for the relay to exit on its own.
func (r *relay) wait(timeout time.Duration) (int, string) {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		r.t.Fatalf("relay still running after %s; output:\n%s", timeout, tail(r.out.String(), 30))
	}
	return r.cmd.ProcessState.ExitCode(), r.out.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStreaming waits until the relay streams from the slot: rows inserted
// before that would predate the slot. The slot is also active while the
// relay's walsender creates it (CREATE_REPLICATION_SLOT), before streaming
// starts, so the walsender's state must have left startup too.
func (e *env) waitStreaming(slot string) {
	e.t.Helper()
	waitFor(e.t, 60*time.Second, "the relay to stream from slot "+slot, func() bool {
		var streaming bool
		err := e.scan(`SELECT EXISTS (SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1 AND r.state IN ('catchup', 'streaming'))`, []any{slot}, &streaming)
		return err == nil && streaming
	})
}

// event is what a test inserted.
type event struct {
	ID    string
	Type  string // aggregatetype
	Key   string // aggregateid
	Seq   int    // per-key sequence, also in the payload
	Table string
}

// producer inserts outbox rows and remembers what committed.
type producer struct {
	mu     sync.Mutex
	events []event
	seq    map[string]int
}

func newProducer() *producer { return &producer{seq: map[string]int{}} }

// insert commits one transaction of n events on conn into table, with keys
// chosen by keyOf(i).
func (p *producer) insert(ctx context.Context, conn *pgx.Conn, table string, n int, keyOf func(i int) (typ, key string)) error {
	return p.insertAt(ctx, conn, table, n, keyOf, time.Time{})
}

// insertAt is insert with an explicit created_at (which picks a partitioned
// outbox's partition); the zero time leaves the column to its default.
func (p *producer) insertAt(ctx context.Context, conn *pgx.Conn, table string, n int, keyOf func(i int) (typ, key string), at time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var batch []event
	next := map[string]int{}
	for k, v := range p.seq {
		next[k] = v
	}
	for i := 0; i < n; i++ {
		typ, key := keyOf(i)
		next[table+"/"+key]++
		ev := event{Type: typ, Key: key, Seq: next[table+"/"+key], Table: table}
		payload, _ := json.Marshal(map[string]any{"key": key, "seq": ev.Seq, "pad": strings.Repeat("x", 120)})
		var row pgx.Row
		if at.IsZero() {
			row = tx.QueryRow(ctx, "INSERT INTO "+table+" (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text",
				typ, key, typ+"Created", payload)
		} else {
			row = tx.QueryRow(ctx, "INSERT INTO "+table+" (aggregatetype, aggregateid, type, payload, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id::text",
				typ, key, typ+"Created", payload, at)
		}
		err := row.Scan(&ev.ID)
		if err != nil {
			return err
		}
		batch = append(batch, ev)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	p.seq = next
	p.events = append(p.events, batch...)
	return nil
}

func (p *producer) committed() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]event(nil), p.events...)
}

// verdict compares what Kafka holds with what committed.
type verdict struct {
	events, lost, duplicates, orderViolations, misplaced int
	problems                                             []string
}

func (v verdict) String() string {
	return fmt.Sprintf("events=%d lost=%d duplicates=%d order_violations=%d misplaced=%d", v.events, v.lost, v.duplicates, v.orderViolations, v.misplaced)
}

// readAll reads every record of the outbox topics.
func (e *env) readAll(topics ...string) []devenv.Record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	recs, err := devenv.ReadAll(ctx, e.kafka.Addr(), topics...)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// check checks every committed event is in Kafka on the right topic and
// murmur2 partition with key and id header, and that first deliveries per key
// are in commit order.
func check(committed []event, recs []devenv.Record, partitions int32, topicOf func(event) string) verdict {
	v := verdict{events: len(committed)}
	byID := map[string]event{}
	for _, ev := range committed {
		byID[ev.ID] = ev
	}
	seen := map[string]int{}
	lastSeq := map[string]int{}
	for _, r := range recs {
		id := r.Headers["id"]
		ev, ok := byID[id]
		if !ok {
			v.problems = append(v.problems, fmt.Sprintf("record %s/%d@%d has unknown id %q", r.Topic, r.Partition, r.Offset, id))
			continue
		}
		seen[id]++
		if seen[id] > 1 {
			v.duplicates++
			continue
		}
		if r.Topic != topicOf(ev) || string(r.Key) != ev.Key || r.Partition != javaPartition([]byte(ev.Key), partitions) || r.Headers["type"] != ev.Type+"Created" {
			v.misplaced++
			if len(v.problems) < 10 {
				v.problems = append(v.problems, fmt.Sprintf("event %+v landed as topic=%s partition=%d key=%q type=%q", ev, r.Topic, r.Partition, r.Key, r.Headers["type"]))
			}
		}
		// Records of one key share a partition, and ReadAll returns each
		// partition in offset order, so first deliveries must climb by one.
		orderKey := ev.Table + "/" + ev.Key
		if ev.Seq != lastSeq[orderKey]+1 {
			v.orderViolations++
			if len(v.problems) < 10 {
				v.problems = append(v.problems, fmt.Sprintf("key %s: seq %d delivered after %d", orderKey, ev.Seq, lastSeq[orderKey]))
			}
		}
		if ev.Seq > lastSeq[orderKey] {
			lastSeq[orderKey] = ev.Seq
		}
	}
	for _, ev := range committed {
		if seen[ev.ID] == 0 {
			v.lost++
			if len(v.problems) < 10 {
				v.problems = append(v.problems, fmt.Sprintf("lost %+v", ev))
			}
		}
	}
	return v
}

func defaultTopic(ev event) string { return "outbox.event." + ev.Type }

// waitDelivered waits until Kafka holds at least n records on the topics.
func (e *env) waitDelivered(n int, timeout time.Duration, topics ...string) {
	e.t.Helper()
	waitFor(e.t, timeout, fmt.Sprintf("%d records in Kafka", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := devenv.CountRecords(ctx, e.kafka.Addr(), topics...)
		return err == nil && c >= int64(n)
	})
}

func (e *env) connect() *pgx.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.url())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// dropSlot terminates the slot's walsender, if any (a stopped relay's can
// outlive it by a moment, and the slot cannot be dropped while active), and
// drops the slot; a slot that is already gone is fine. t is the (sub)test
// calling it, which a failure stops.
func (e *env) dropSlot(t *testing.T, slot string) {
	t.Helper()
	waitFor(t, 30*time.Second, "the slot to be dropped", func() bool {
		_ = e.scan("SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", []any{slot}, new(int64))
		var n int64
		err := e.scan("SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", []any{slot}, &n)
		if err != nil {
			return false
		}
		var left int64
		return e.scan("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", []any{slot}, &left) == nil && left == 0
	})
}

// slotLSNs returns the slot's confirmed_flush_lsn and the server's current WAL
// position, in bytes.
func (e *env) slotLSNs(slot string) (confirmed, current int64) {
	e.t.Helper()
	err := e.scan(`SELECT coalesce(confirmed_flush_lsn - '0/0', 0)::bigint, (pg_current_wal_lsn() - '0/0')::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, []any{slot}, &confirmed, &current)
	if err != nil {
		e.t.Fatalf("reading slot %s: %v", slot, err)
	}
	return confirmed, current
}
