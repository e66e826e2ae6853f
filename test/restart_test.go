package test

// Fault tests: the guarantees only mean something if they hold while things
// break, so each of these breaks one component under a steady stream of
// outbox inserts and then checks, with the independent consumer, that every
// committed event reached Kafka (lost = 0) and that first deliveries per key
// are in commit order. Duplicates are allowed where the guarantee allows them
// (the unacked tail) and logged.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/relay-dev/relay/internal/devenv"
)

const outboxOnly = "outbox:\n  - table: public.outbox\n"

var outboxTopics = allTopics("outbox.event.")

// TestBrokerRestart takes the Kafka broker away twice while a writer inserts
// at a steady rate; its state is kept in its data dir and it comes back on the
// same port. The first outage is a quick restart, which the producer rides out
// with its own retries; the second lasts until the relay gives up on its
// producer and restarts the pipeline from the slot. If the relay confirmed the
// slot past events Kafka never acknowledged, or dropped records that failed
// while the broker was away, lost > 0; if it re-sent a failed record alone
// behind later ones of its key, order breaks; if it never reconnected,
// delivery times out.
func TestBrokerRestart(t *testing.T) {
	e := newEnv(t, envOpts{kafkaDir: true})
	r := e.startRelay(e.config(outboxOnly))
	e.waitStreaming("outbox_relay")

	p := newProducer()
	w := e.startSteadyWriter(p, 10*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)
	start := time.Now()
	if err := e.kafka.Restart(); err != nil {
		t.Fatal(err)
	}
	down := time.Since(start)
	e.waitGrowth(200, 60*time.Second)
	t.Logf("quick broker restart: broker down %s, relay delivering again %s after the restart began",
		down.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Closing the cluster saves its state; Restart starts it again.
	restarts := strings.Count(r.out.String(), "pipeline stopped")
	start = time.Now()
	e.kafka.Cluster().Close()
	waitFor(t, 90*time.Second, "the relay to restart its pipeline while the broker is away", func() bool {
		return strings.Count(r.out.String(), "pipeline stopped") > restarts
	})
	if err := e.kafka.Restart(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	afterFault := len(p.committed())
	t.Logf("relay, broker away: %s", nthLine(r.out.String(), "pipeline stopped", restarts))
	e.waitGrowth(200, 60*time.Second)
	t.Logf("long broker outage: broker down %s, relay delivering again %s after it was back",
		up.Sub(start).Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
	w.waitCommitted(afterFault+200, 60*time.Second)
	w.halt()
	r.mustBeRunning()

	v := e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("broker restarts: %s, writer retries=%d", v, w.retries.Load())
	v.mustHold(t, false)
	e.waitConfirmedCatchUp("outbox_relay", 30*time.Second)
}

// TestPostgresRestart restarts Postgres (fast shutdown: every connection is
// dropped, the slot survives) under load. The relay must reconnect on its own:
// if it gave up, exited, or kept waiting on a dead connection, the slot never
// becomes active again and the test times out; if it resumed from anywhere but
// the slot's confirmed position, lost > 0 or order breaks.
func TestPostgresRestart(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.startRelay(e.config(outboxOnly))
	e.waitStreaming("outbox_relay")
	before := e.slotPID("outbox_relay")

	p := newProducer()
	w := e.startSteadyWriter(p, 10*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	afterFault := len(p.committed())
	start := time.Now()
	if err := e.pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	after := e.waitNewSlotPID("outbox_relay", before, 60*time.Second)
	t.Logf("postgres restart took %s; relay streaming again (walsender pid %d -> %d) %s after the server was back",
		up.Sub(start).Round(time.Millisecond), before, after, time.Since(up).Round(time.Millisecond))
	e.waitGrowth(200, 60*time.Second)
	w.waitCommitted(afterFault+200, 60*time.Second)
	w.halt()
	r.mustBeRunning()

	v := e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("postgres restart: %s, writer retries=%d ambiguous_commits=%d", v, w.retries.Load(), w.ambiguous.Load())
	v.mustHold(t, false)
	e.waitConfirmedCatchUp("outbox_relay", 30*time.Second)
}

// TestWalsenderKilled terminates the walsender serving the relay's slot, as an
// operator or a failover tool might. The relay must notice the broken stream
// and start a new one from the slot's confirmed position: without a
// reconnect the slot stays inactive and the test times out; restarting from
// the last received position instead would lose the unacked tail (lost > 0).
func TestWalsenderKilled(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.startRelay(e.config(outboxOnly))
	e.waitStreaming("outbox_relay")
	before := e.slotPID("outbox_relay")

	p := newProducer()
	w := e.startSteadyWriter(p, 10*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)
	afterFault := len(p.committed())
	var killed bool
	if err := e.scan(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'outbox_relay'`, nil, &killed); err != nil || !killed {
		t.Fatalf("terminating the walsender: %v (terminated=%t)", err, killed)
	}
	start := time.Now()
	after := e.waitNewSlotPID("outbox_relay", before, 60*time.Second)
	t.Logf("walsender %d killed; relay streaming again with walsender %d after %s", before, after, time.Since(start).Round(time.Millisecond))
	e.waitGrowth(200, 60*time.Second)
	w.waitCommitted(afterFault+200, 60*time.Second)
	w.halt()
	r.mustBeRunning()

	v := e.waitAllDelivered(p.committed(), 90*time.Second)
	t.Logf("walsender killed: %s, writer retries=%d", v, w.retries.Load())
	v.mustHold(t, false)
	e.waitConfirmedCatchUp("outbox_relay", 30*time.Second)
}

// TestSecondRelaySameSlot runs a standby relay B on the slot relay A holds. B
// must wait politely: if it stole the slot the active walsender would change
// hands while A runs; if it streamed alongside A, duplicates > 0; if B exited
// or logged the busy slot above info, the standby setup of the README would
// not work. A is then stopped right behind a burst of inserts: if its clean
// stop did not deliver and confirm what it had taken, B would re-send it
// (duplicates > 0) or, had A confirmed unacked events, skip it (lost > 0). B
// must take over on its own and relay what follows.
func TestSecondRelaySameSlot(t *testing.T) {
	e := newEnv(t, envOpts{})
	// application_name tells the two relays' walsenders apart in
	// pg_stat_activity.
	cfgA := e.configNamed("relay-a", outboxOnly)
	cfgB := e.configNamed("relay-b", outboxOnly)
	a := e.startRelay(cfgA)
	e.waitStreaming("outbox_relay")
	pidA, app := e.slotHolder("outbox_relay")
	if app != "relay-a" {
		t.Fatalf("slot held by %q (pid %d), want relay-a", app, pidA)
	}

	b := e.startRelay(cfgB)
	// Two refusals show B retries rather than giving up after one.
	waitFor(t, 60*time.Second, "relay B to report the slot active twice", func() bool {
		b.mustBeRunning()
		return len(slotActiveLines(b.out.String())) >= 2
	})
	for _, l := range slotActiveLines(b.out.String()) {
		if !strings.Contains(l, `"level":"info"`) {
			t.Errorf("standby logged the busy slot above info: %s", l)
		}
	}

	p := newProducer()
	conn := e.connect()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := p.insert(ctx, conn, "public.outbox", 1+i%5, keyed(30, i)); err != nil {
			t.Fatal(err)
		}
		// B keeps knocking while A streams; the slot must stay A's.
		if pid, app := e.slotHolder("outbox_relay"); pid != pidA || app != "relay-a" {
			t.Fatalf("slot moved to pid %d (%q) while relay A (pid %d) runs", pid, app, pidA)
		}
	}
	v := e.waitAllDelivered(p.committed(), 60*time.Second)
	t.Logf("with standby: %s", v)
	v.mustHold(t, true)
	b.mustBeRunning()
	if pid, _ := e.slotHolder("outbox_relay"); pid != pidA {
		t.Fatalf("slot moved to pid %d while relay A (pid %d) runs", pid, pidA)
	}
	if strings.Contains(b.out.String(), "streaming from replication slot") {
		t.Fatalf("standby streamed while A held the slot")
	}

	// A is told to stop right behind a burst, with events in flight or not
	// yet read: it must deliver and confirm what it took, and B must start
	// exactly after it.
	for i := 0; i < 20; i++ {
		if err := p.insert(ctx, conn, "public.outbox", 1+i%5, keyed(30, 50+i)); err != nil {
			t.Fatal(err)
		}
	}
	stopped := time.Now()
	if code := a.stop(60 * time.Second); code != 0 {
		t.Fatalf("relay A exited %d after SIGTERM", code)
	}
	if !strings.Contains(a.out.String(), "stopped cleanly") {
		t.Fatalf("relay A did not report a clean stop; output:\n%s", tail(a.out.String(), 20))
	}
	var pidB int
	waitFor(t, 60*time.Second, "relay B to take the slot over", func() bool {
		b.mustBeRunning()
		var app string
		pidB, app = e.slotHolder("outbox_relay")
		return app == "relay-b"
	})
	t.Logf("relay B took the slot over (walsender %d -> %d) %s after A was told to stop", pidA, pidB, time.Since(stopped).Round(time.Millisecond))

	for i := 0; i < 20; i++ {
		if err := p.insert(ctx, conn, "public.outbox", 1+i%5, keyed(30, 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	v = e.waitAllDelivered(p.committed(), 60*time.Second)
	t.Logf("after handover: %s", v)
	v.mustHold(t, true)
	if code := b.stop(60 * time.Second); code != 0 {
		t.Fatalf("relay B exited %d after SIGTERM", code)
	}
}

// TestChaos is the soak run behind test/chaos.sh: RELAY_CHAOS=10m mixes faults
// at random under load for that long, then prints one verdict line. It fails
// when an event is lost or first deliveries of a key are out of order.
func TestChaos(t *testing.T) {
	spec := os.Getenv("RELAY_CHAOS")
	if spec == "" {
		t.Skip("soak test; run test/chaos.sh DURATION (or set RELAY_CHAOS=10m)")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil {
		t.Fatalf("RELAY_CHAOS=%q: %v", spec, err)
	}
	e := newEnv(t, envOpts{kafkaDir: true})
	cfg := e.config(outboxOnly)
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 5*time.Millisecond)

	counts := map[string]int{}
	faults := []struct {
		name string
		do   func() error
	}{
		{"kill -9 relay", func() error {
			r.kill()
			r = e.startRelay(cfg)
			return nil
		}},
		{"SIGTERM relay", func() error {
			if code := r.stop(60 * time.Second); code != 0 {
				return fmt.Errorf("relay exited %d after SIGTERM", code)
			}
			r = e.startRelay(cfg)
			return nil
		}},
		{"restart kafka", e.kafka.Restart},
		{"restart postgres", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			return e.pg.Restart(ctx)
		}},
		{"kill walsender", func() error {
			// The slot may be between holders: nothing to kill is fine.
			var n int
			return e.scan(`SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = 'outbox_relay' AND active`, nil, &n)
		}},
		{"produce error, retriable", func() error {
			e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotLeaderForPartition, Count: 1 + mrand.IntN(5)})
			return nil
		}},
		// sarama answers a non-retriable produce error by failing that
		// batch and sending the partition's next one under a new epoch
		// before the relay can stop it, so this fault can still break
		// per-key order (see TestBrokerRestart for the retriable cases).
		{"produce error, fatal to the batch", func() error {
			e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.UnknownServerError, Count: 1 + mrand.IntN(3)})
			return nil
		}},
	}
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		pause := time.Duration(1000+mrand.IntN(4000)) * time.Millisecond
		select {
		case <-r.done:
			t.Fatalf("relay exited on its own (%v); output:\n%s", r.err, tail(r.out.String(), 40))
		case <-w.done:
			t.Fatalf("writer stopped: %v", w.err)
		case <-time.After(pause):
		}
		f := faults[mrand.IntN(len(faults))]
		t.Logf("%s: %s (events so far %d)", time.Now().Format(time.TimeOnly), f.name, len(p.committed()))
		if err := f.do(); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		counts[f.name]++
	}
	w.halt()
	r.mustBeRunning()
	committed := p.committed()
	if os.Getenv("RELAY_KAFKA_DELIVERY") == "exactly_once" {
		// The relays inherit the setting; the verdict is what a
		// read_committed consumer sees, and duplicates count against it.
		v := e.waitAllCommitted(committed, 5*time.Minute)
		t.Logf("faults: %v; writer retries=%d ambiguous_commits=%d misplaced=%d", counts, w.retries.Load(), w.ambiguous.Load(), v.misplaced)
		fmt.Printf("events=%d lost=%d duplicates=%d order_violations=%d\n", v.events, v.lost, v.duplicates, v.orderViolations)
		v.mustHold(t, true)
		return
	}
	v, err := e.collectDelivered(committed, 5*time.Minute)
	t.Logf("faults: %v; writer retries=%d ambiguous_commits=%d misplaced=%d", counts, w.retries.Load(), w.ambiguous.Load(), v.misplaced)
	if v.lost >= 0 { // negative: Kafka could not be read, no verdict
		fmt.Printf("events=%d lost=%d duplicates=%d order_violations=%d\n", v.events, v.lost, v.duplicates, v.orderViolations)
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(v.problems, "\n"))
	}
	v.mustHold(t, false)
}

// configNamed is config with the relay's connections tagged by
// application_name.
func (e *env) configNamed(app, extra string) string {
	return strings.Replace(e.config(extra), "sslmode=disable", "sslmode=disable&application_name="+app, 1)
}

// nthLine returns the n-th (from 0) line of out containing substr.
func nthLine(out, substr string, n int) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, substr) {
			if n == 0 {
				return l
			}
			n--
		}
	}
	return ""
}

func slotActiveLines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "slot is active") {
			ls = append(ls, l)
		}
	}
	return ls
}

func (r *relay) mustBeRunning() {
	r.t.Helper()
	select {
	case <-r.done:
		r.t.Fatalf("relay exited (%v); output:\n%s", r.err, tail(r.out.String(), 40))
	default:
	}
}

// slotHolder returns the slot's walsender pid (0 when inactive) and its
// application_name.
func (e *env) slotHolder(slot string) (int, string) {
	e.t.Helper()
	var pid int
	var app string
	err := e.scan(`SELECT coalesce(s.active_pid, 0), coalesce(a.application_name, '')
		FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, []any{slot}, &pid, &app)
	if err != nil {
		e.t.Fatalf("reading slot %s: %v", slot, err)
	}
	return pid, app
}

func (e *env) slotPID(slot string) int {
	e.t.Helper()
	pid, _ := e.slotHolder(slot)
	if pid == 0 {
		e.t.Fatalf("slot %s is not active", slot)
	}
	return pid
}

// waitNewSlotPID waits until a walsender other than old holds the slot. It
// tolerates the server being away meanwhile.
func (e *env) waitNewSlotPID(slot string, old int, timeout time.Duration) int {
	e.t.Helper()
	var pid int
	waitFor(e.t, timeout, "the slot to be active again with a new walsender", func() bool {
		err := e.scan(`SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, []any{slot}, &pid)
		return err == nil && pid != 0 && pid != old
	})
	return pid
}

// waitGrowth waits until Kafka holds n more records than now: proof the relay
// is delivering, whatever happened before.
func (e *env) waitGrowth(n int, timeout time.Duration) {
	e.t.Helper()
	var base int64 = -1
	waitFor(e.t, timeout, fmt.Sprintf("%d more records in Kafka", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := devenv.CountRecords(ctx, e.kafka.Addr(), outboxTopics...)
		if err != nil {
			return false
		}
		if base < 0 {
			base = c
		}
		return c >= base+int64(n)
	})
}

// waitAllDelivered polls Kafka until every committed event is there and
// returns the verdict; on timeout it fails with what is missing.
func (e *env) waitAllDelivered(committed []event, timeout time.Duration) verdict {
	e.t.Helper()
	v, err := e.collectDelivered(committed, timeout)
	if err != nil {
		e.t.Fatalf("%v\n%s", err, strings.Join(v.problems, "\n"))
	}
	return v
}

// collectDelivered is waitAllDelivered returning the last verdict with an
// error on timeout, for callers that report it either way.
func (e *env) collectDelivered(committed []event, timeout time.Duration) (verdict, error) {
	return e.collect(committed, timeout, devenv.ReadAll)
}

// collect polls Kafka until read (devenv.ReadAll, or ReadCommitted for what
// a read_committed consumer sees) returns every committed event, and returns
// the verdict on what it read; on timeout, the last verdict and an error.
func (e *env) collect(committed []event, timeout time.Duration, read func(ctx context.Context, addr string, topics ...string) ([]devenv.Record, error)) (verdict, error) {
	deadline := time.Now().Add(timeout)
	for {
		last := time.Now().After(deadline)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		// Counting is cheap; reading every record only pays once enough
		// are there (duplicates, and under exactly_once aborted records and
		// markers, count too, so a count alone proves nothing).
		n, err := devenv.CountRecords(ctx, e.kafka.Addr(), outboxTopics...)
		v := verdict{events: len(committed), lost: -1}
		if err == nil && (n >= int64(len(committed)) || last) {
			var recs []devenv.Record
			if recs, err = read(ctx, e.kafka.Addr(), outboxTopics...); err == nil {
				v = check(committed, recs, e.parts, defaultTopic)
			}
		}
		cancel()
		if v.lost == 0 {
			return v, nil
		}
		if last {
			return v, fmt.Errorf("not every committed event reached Kafka within %s: %s (records=%d, error: %w)", timeout, v, n, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (v verdict) mustHold(t *testing.T, noDuplicates bool) {
	t.Helper()
	if v.lost != 0 || v.orderViolations != 0 || v.misplaced != 0 || len(v.problems) != 0 || (noDuplicates && v.duplicates != 0) {
		t.Fatalf("%s (duplicates allowed: %t)\n%s", v, !noDuplicates, strings.Join(v.problems, "\n"))
	}
}

// waitConfirmedCatchUp waits until the slot is confirmed up to the WAL
// written so far: a relay that reconnected but never confirmed again would
// pin WAL and re-send everything after its next restart.
func (e *env) waitConfirmedCatchUp(slot string, timeout time.Duration) {
	e.t.Helper()
	_, target := e.slotLSNs(slot)
	waitFor(e.t, timeout, "the slot to be confirmed up to the current WAL position", func() bool {
		confirmed, _ := e.slotLSNs(slot)
		return confirmed >= target
	})
}

// steadyWriter inserts outbox transactions at a steady pace through faults.
type steadyWriter struct {
	e                  *env
	p                  *producer
	stop, done         chan struct{}
	err                error
	retries, ambiguous atomic.Int64
}

func (e *env) startSteadyWriter(p *producer, every time.Duration) *steadyWriter {
	w := &steadyWriter{e: e, p: p, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(every)
	e.t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
		<-w.done
	})
	return w
}

// waitCommitted waits until the writer has committed n events in all, so a
// test knows events written after its fault exist: growth in Kafka alone could
// be the re-sent tail.
func (w *steadyWriter) waitCommitted(n int, timeout time.Duration) {
	w.e.t.Helper()
	waitFor(w.e.t, timeout, fmt.Sprintf("the writer to commit %d events", n), func() bool {
		select {
		case <-w.done:
			w.e.t.Fatalf("writer stopped: %v", w.err)
		default:
		}
		return len(w.p.committed()) >= n
	})
}

// halt stops the writer after its current transaction and fails the test if
// it had given up.
func (w *steadyWriter) halt() {
	w.e.t.Helper()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	if w.err != nil {
		w.e.t.Fatalf("writer: %v", w.err)
	}
}

func (w *steadyWriter) run(every time.Duration) {
	defer close(w.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		if err := w.insert(&conn, 1+i%4, keyed(40, i)); err != nil {
			w.err = err
			return
		}
	}
}

// insert commits one transaction of n events, retrying through lost
// connections. A COMMIT that fails is ambiguous (the server may have
// committed before the connection died), so the events carry client-made ids
// and the writer asks the server whether the first one exists before trying
// again: retrying blindly would commit the events twice, trusting the error
// would record as lost events that are in fact in the outbox.
func (w *steadyWriter) insert(conn **pgx.Conn, n int, keyOf func(int) (string, string)) error {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	next := map[string]int{}
	for k, v := range p.seq {
		next[k] = v
	}
	batch := make([]event, n)
	for i := range batch {
		typ, key := keyOf(i)
		next["public.outbox/"+key]++
		batch[i] = event{ID: newUUID(), Type: typ, Key: key, Seq: next["public.outbox/"+key], Table: "public.outbox"}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 0; ; attempt++ {
		if time.Now().After(deadline) {
			return fmt.Errorf("could not commit a transaction for 2 minutes")
		}
		if attempt > 0 {
			w.retries.Add(1)
			time.Sleep(100 * time.Millisecond) // pacing reconnects, not waiting for a condition
		}
		if *conn == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := pgx.Connect(ctx, w.e.url())
			cancel()
			if err != nil {
				continue
			}
			*conn = c
		}
		commitSent, err := insertBatch(*conn, batch)
		if err == nil {
			break
		}
		(*conn).Close(context.Background())
		*conn = nil
		if !commitSent {
			continue
		}
		w.ambiguous.Add(1)
		committed, err := w.exists(batch[0].ID, deadline)
		if err != nil {
			return err
		}
		if committed {
			break
		}
	}
	p.seq = next
	p.events = append(p.events, batch...)
	return nil
}

// insertBatch reports whether COMMIT was sent, which makes an error ambiguous.
func insertBatch(conn *pgx.Conn, batch []event) (commitSent bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	for _, ev := range batch {
		payload, _ := json.Marshal(map[string]any{"key": ev.Key, "seq": ev.Seq, "pad": strings.Repeat("x", 120)})
		if _, err := tx.Exec(ctx, `INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`,
			ev.ID, ev.Type, ev.Key, ev.Type+"Created", payload); err != nil {
			return false, err
		}
	}
	return true, tx.Commit(ctx)
}

// exists asks, on a fresh connection and for as long as it takes the server
// to come back, whether the outbox holds id.
func (w *steadyWriter) exists(id string, deadline time.Time) (bool, error) {
	for {
		var ok bool
		err := w.e.scan(`SELECT EXISTS (SELECT 1 FROM public.outbox WHERE id = $1)`, []any{id}, &ok)
		if err == nil {
			return ok, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("checking whether an ambiguous commit happened: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // pacing reconnects
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
