package test

// Exactly-once tests: the relay runs with kafka.delivery exactly_once and
// everything is checked the way a consumer with isolation.level=
// read_committed sees it (devenv.ReadCommitted, franz-go). Duplicates are not
// allowed anywhere here.

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/relay-dev/relay/internal/devenv"
)

// exactlyOnce is the environment that switches a relay to transactions.
var exactlyOnce = []string{"RELAY_KAFKA_DELIVERY=exactly_once"}

func withEnv(extra ...string) []string {
	return append(append([]string(nil), exactlyOnce...), extra...)
}

// waitAllCommitted waits until a read_committed consumer sees every
// committed event and returns the verdict on what it sees.
func (e *env) waitAllCommitted(committed []event, timeout time.Duration) verdict {
	e.t.Helper()
	v, err := e.collect(committed, timeout, devenv.ReadCommitted)
	if err != nil {
		e.t.Fatalf("read_committed: %v\n%s", err, strings.Join(v.problems, "\n"))
	}
	return v
}

// uncommittedDuplicates is how many records a read_uncommitted consumer
// sees more than once: the aborted transactions' records.
func (e *env) uncommittedDuplicates(committed []event) int {
	e.t.Helper()
	recs := e.readAll(outboxTopics...)
	return check(committed, recs, e.parts, defaultTopic).duplicates
}

// waitSnapshotCommitted waits for the slot to be confirmed past the point it
// was created at. Under exactly_once that happens once a committed Kafka
// transaction's progress record vouches for a position, and the first one
// also says the initial snapshot is complete: a relay killed before it
// reads the snapshot again (README, snapshot), which is not what the kill
// tests are about.
func (e *env) waitSnapshotCommitted(slot string) {
	e.t.Helper()
	var created string
	if err := e.scan(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, []any{slot}, &created); err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, 60*time.Second, "the first committed transaction to confirm slot "+slot, func() bool {
		var moved bool
		err := e.scan(`SELECT confirmed_flush_lsn > $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, []any{slot, created}, &moved)
		return err == nil && moved
	})
}

// TestExactlyOnceKill9Loop is TestKill9Loop in exactly_once mode: five
// SIGKILLs under steady writes, every other one while the broker refuses
// produce. A relay that confirmed the slot before the Kafka commit would
// lose the events of the transaction open at the kill; one that resumed from
// anywhere but the committed progress record would show duplicates.
func TestExactlyOnceKill9Loop(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := e.config(outboxOnly)
	r := e.startRelay(cfg, exactlyOnce...)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 3*time.Millisecond)
	e.waitSnapshotCommitted("outbox_relay")
	const kills = 5
	e.killUnderLoad(r, cfg, kills, exactlyOnce...)
	e.waitStreaming("outbox_relay")
	w.halt()
	v := e.waitAllCommitted(p.committed(), 120*time.Second)
	v.mustHold(t, true)
	t.Logf("exactly_once, kill -9 x%d: %s as read_committed sees it; read_uncommitted sees %d duplicates (aborted transactions)",
		kills, v, e.uncommittedDuplicates(p.committed()))
}

// TestExactlyOnceProduceError makes the broker answer every produce with a
// non-retriable error for 3s under load. At least once, sarama gives up on a
// batch and sends the partition's next one, which is how a key gets out of
// order; here the transaction is aborted and the pipeline restarts from the
// committed record, so read_committed sees neither gaps nor reordering.
func TestExactlyOnceProduceError(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.startRelay(e.config(outboxOnly), exactlyOnce...)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 3*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)
	fault := e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.UnknownServerError, Count: -1})
	began := time.Now()
	waitFor(t, 60*time.Second, "3s of refused produce", func() bool {
		return fault.Hits() >= 10 && time.Since(began) >= 3*time.Second
	})
	hits := fault.Hits()
	fault.Remove()
	after := len(p.committed())
	w.waitCommitted(after+200, 60*time.Second)
	w.halt()
	r.mustBeRunning()
	v := e.waitAllCommitted(p.committed(), 120*time.Second)
	v.mustHold(t, true)
	t.Logf("exactly_once, UNKNOWN_SERVER_ERROR for %s (%d refused produce requests, %d pipeline restarts): %s",
		time.Since(began).Round(time.Millisecond), hits, strings.Count(r.out.String(), "pipeline stopped"), v)
}

// txnWatch records the transactional requests the broker receives.
type txnWatch struct {
	mu      sync.Mutex
	inits   int // InitProducerId with a transactional id
	commits []int16
}

func watchTxns(c *kfake.Cluster) *txnWatch {
	w := &txnWatch{}
	c.ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if r := req.(*kmsg.InitProducerIDRequest); r.TransactionalID != nil {
			w.mu.Lock()
			w.inits++
			w.mu.Unlock()
		}
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if r := req.(*kmsg.EndTxnRequest); r.Commit {
			w.mu.Lock()
			w.commits = append(w.commits, r.ProducerEpoch)
			w.mu.Unlock()
		}
		return nil, nil, false
	})
	return w
}

func (w *txnWatch) snapshot() (inits int, commits []int16) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inits, append([]int16(nil), w.commits...)
}

// TestExactlyOnceTwin starts a second relay with the same config (a botched
// deploy) while the first streams under load, then kills the first. The twin
// must never initialise the transactional id while the first lives (that
// would fence it) nor commit anything, and once it takes over, a
// read_committed consumer sees every event once.
func TestExactlyOnceTwin(t *testing.T) {
	e := newEnv(t, envOpts{})
	watch := watchTxns(e.kafka.Cluster())
	cfg := e.config(outboxOnly)
	first := e.startRelay(cfg, exactlyOnce...)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 3*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)

	initsBefore, commitsBefore := watch.snapshot()
	epoch := commitsBefore[len(commitsBefore)-1]
	twin := e.startRelay(cfg, exactlyOnce...)
	waitFor(t, 60*time.Second, "the twin to find the slot active twice", func() bool {
		twin.mustBeRunning()
		return len(slotActiveLines(twin.out.String())) >= 2
	})
	e.waitGrowth(200, 60*time.Second)
	inits, commits := watch.snapshot()
	first.mustBeRunning()
	if inits != initsBefore {
		t.Fatalf("transactional id initialised %d times while the first relay lived (the twin fenced it)", inits-initsBefore)
	}
	for _, ep := range commits[len(commitsBefore):] {
		if ep != epoch {
			t.Fatalf("a commit with producer epoch %d while the first relay (epoch %d) lived", ep, epoch)
		}
	}
	t.Logf("twin waited; %d commits, all by the first relay (epoch %d)", len(commits)-len(commitsBefore), epoch)

	first.kill()
	killed := time.Now()
	waitFor(t, 90*time.Second, "the twin to stream", func() bool {
		twin.mustBeRunning()
		return strings.Contains(twin.out.String(), "streaming from replication slot")
	})
	t.Logf("twin took over %s after the kill", time.Since(killed).Round(time.Millisecond))
	after := len(p.committed())
	w.waitCommitted(after+200, 60*time.Second)
	w.halt()
	v := e.waitAllCommitted(p.committed(), 120*time.Second)
	v.mustHold(t, true)
	_, commits = watch.snapshot()
	t.Logf("twin after the first was killed: %s; newest committing epoch %d", v, commits[len(commits)-1])
}

// TestExactlyOnceZombieFenced freezes the active relay (SIGSTOP) until
// Postgres gives its walsender up, lets a second relay take over, then
// thaws the first: a zombie holding an open Kafka transaction. Its commit
// must be refused (the second relay fenced it at start), so nothing it
// publishes after thawing is visible and nothing is seen twice.
func TestExactlyOnceZombieFenced(t *testing.T) {
	e := newEnv(t, envOpts{pgSettings: map[string]string{"wal_sender_timeout": "2s"}})
	cfg := e.config(outboxOnly)
	zombie := e.startRelay(cfg, exactlyOnce...)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 3*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)
	if err := zombie.cmd.Process.Signal(sigStop); err != nil {
		t.Fatal(err)
	}
	successor := e.startRelay(cfg, exactlyOnce...)
	waitFor(t, 90*time.Second, "the successor to stream", func() bool {
		successor.mustBeRunning()
		return strings.Contains(successor.out.String(), "streaming from replication slot")
	})
	e.waitGrowth(200, 60*time.Second)
	if err := zombie.cmd.Process.Signal(sigCont); err != nil {
		t.Fatal(err)
	}
	// Thawed, it finds its replication connection gone or its transaction
	// fenced, whichever it touches first, and becomes a standby.
	waitFor(t, 60*time.Second, "the thawed relay to become a standby", func() bool {
		return len(slotActiveLines(zombie.out.String())) >= 1
	})
	after := len(p.committed())
	w.waitCommitted(after+200, 60*time.Second)
	w.halt()
	successor.mustBeRunning()
	v := e.waitAllCommitted(p.committed(), 120*time.Second)
	v.mustHold(t, true)
	t.Logf("zombie thawed after a takeover: %s; zombie said: %s", v, nthLine(zombie.out.String(), "pipeline stopped", 0))
}

// TestExactlyOnceLargeTransaction splits one 20k-event Postgres transaction
// across Kafka transactions of 500 and kills the relay while part of it is
// committed. The restarted relay must skip exactly the committed part
// (the record's partial transaction): re-sending it would duplicate events,
// skipping more would lose them.
func TestExactlyOnceLargeTransaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := e.config(outboxOnly)
	env := withEnv("RELAY_PIPELINE_TRANSACTION_MAX_EVENTS=500", "RELAY_PIPELINE_MAX_INFLIGHT_EVENTS=1000")
	r := e.startRelay(cfg, env...)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	conn := e.connect()
	const n = 20000
	if err := p.insert(context.Background(), conn, "public.outbox", n, keyed(50, 0)); err != nil {
		t.Fatal(err)
	}
	// Slow produce down so the kill lands mid-transaction: the broker
	// takes 5ms over each produce request.
	c := e.kafka.Cluster()
	var slow atomic.Bool
	slow.Store(true)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slow.Load() {
			c.KeepControl()
			time.Sleep(5 * time.Millisecond)
		}
		return nil, nil, false
	})
	var visible int
	waitFor(t, 120*time.Second, "part of the transaction to be committed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		recs, err := devenv.ReadCommitted(ctx, e.kafka.Addr(), outboxTopics...)
		visible = len(recs)
		return err == nil && visible >= 1000
	})
	r.kill()
	slow.Store(false)
	if visible >= n {
		t.Fatalf("the whole transaction was committed before the kill (%d events): nothing tested", visible)
	}
	r = e.startRelay(cfg, env...)
	waitFor(t, 60*time.Second, "the restarted relay to skip the committed part", func() bool {
		return strings.Contains(r.out.String(), "skipped its events already committed")
	})
	v := e.waitAllCommitted(p.committed(), 180*time.Second)
	v.mustHold(t, true)
	t.Logf("20k-event transaction, killed with %d committed: %s; %s", visible, v, nthLine(r.out.String(), "skipped its events", 0))
}

// TestExactlyOnceRestarts restarts Postgres and then the broker under load.
func TestExactlyOnceRestarts(t *testing.T) {
	e := newEnv(t, envOpts{kafkaDir: true})
	r := e.startRelay(e.config(outboxOnly), exactlyOnce...)
	e.waitStreaming("outbox_relay")
	before := e.slotPID("outbox_relay")
	p := newProducer()
	w := e.startSteadyWriter(p, 5*time.Millisecond)
	e.waitGrowth(200, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitNewSlotPID("outbox_relay", before, 60*time.Second)
	e.waitGrowth(200, 60*time.Second)

	if err := e.kafka.Restart(); err != nil {
		t.Fatal(err)
	}
	e.waitGrowth(200, 60*time.Second)
	restarts := strings.Count(r.out.String(), "pipeline stopped")
	e.kafka.Cluster().Close()
	waitFor(t, 90*time.Second, "the relay to restart its pipeline while the broker is away", func() bool {
		return strings.Count(r.out.String(), "pipeline stopped") > restarts
	})
	if err := e.kafka.Restart(); err != nil {
		t.Fatal(err)
	}
	after := len(p.committed())
	w.waitCommitted(after+200, 60*time.Second)
	w.halt()
	r.mustBeRunning()
	v := e.waitAllCommitted(p.committed(), 120*time.Second)
	v.mustHold(t, true)
	t.Logf("exactly_once, postgres restart + quick and long broker restarts: %s, writer retries=%d", v, w.retries.Load())
	e.waitConfirmedCatchUp("outbox_relay", 30*time.Second)
	// A clean stop commits what is open and exits 0.
	if code := r.stop(40 * time.Second); code != 0 || !strings.Contains(r.out.String(), "stopped cleanly") {
		t.Fatalf("exit %d after SIGTERM; output:\n%s", code, tail(r.out.String(), 20))
	}
}

// TestExactlyOnceIdleOutbox writes 100+ MB of WAL to a table outside the
// publication while the outbox idles: with nothing to publish, the relay
// must still commit progress records for the positions it reaches, or the
// slot would pin all that WAL.
func TestExactlyOnceIdleOutbox(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec("CREATE TABLE churn (id bigint, pad text)", e.db)
	e.startRelay(e.config(outboxOnly), exactlyOnce...)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	if err := p.insert(context.Background(), e.connect(), "public.outbox", 3, keyed(3, 0)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		e.exec("INSERT INTO churn SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 10000) g", e.db)
	}
	const limit = 16 << 20
	var held int64
	waitFor(t, 90*time.Second, "the slot to release WAL", func() bool {
		confirmed, current := e.slotLSNs("outbox_relay")
		held = current - confirmed
		return held < limit
	})
	v := e.waitAllCommitted(p.committed(), 60*time.Second)
	v.mustHold(t, true)
	t.Logf("idle outbox, busy database: slot holds back %d KB; %s", held>>10, v)
}

const (
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)

// TestExactlyOnceCheck runs relay check with exactly_once: it finds the
// transaction coordinator, and a broker refusing the transactional id gets a
// ✗ naming the ACLs.
func TestExactlyOnceCheck(t *testing.T) {
	e := newEnv(t, envOpts{})
	t.Setenv("RELAY_KAFKA_DELIVERY", "exactly_once")
	out, code := runRelay(t, e.config(outboxOnly), "check")
	if code != 0 || !strings.Contains(out, `✓ kafka transactions: transactional id "relay-outbox_relay" has its coordinator`) {
		t.Fatalf("relay check exited %d, want a ✓ for kafka transactions:\n%s", code, out)
	}
	fault := e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.FindCoordinator}, TxnID: "relay-outbox_relay",
		Err: kerr.TransactionalIDAuthorizationFailed, Count: -1})
	defer fault.Remove()
	out, code = runRelay(t, e.config(outboxOnly), "check")
	failed := strings.Join(failedLines(out), "\n")
	if code == 0 || !strings.Contains(failed, "kafka transactions") || !strings.Contains(out, "WRITE and DESCRIBE on TransactionalId") {
		t.Fatalf("relay check exited %d against a broker refusing the transactional id; want a ✗ naming the ACLs:\n%s", code, out)
	}
	t.Logf("refused: %s", failed)

	// The relay itself stops at start, naming the ACLs, rather than
	// retrying a refusal that waiting cannot fix.
	fault.Remove()
	init := e.kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.InitProducerID}, Err: kerr.TransactionalIDAuthorizationFailed, Count: -1})
	defer init.Remove()
	r := e.startRelay(e.config(outboxOnly))
	code, out = r.wait(60 * time.Second)
	last := lastLine(out)
	if code == 0 || !strings.Contains(last, "WRITE and DESCRIBE on TransactionalId") || !strings.Contains(last, "IDEMPOTENT_WRITE") {
		t.Fatalf("relay exited %d against a broker refusing the transactional id; last line: %s", code, last)
	}
	t.Logf("relay run: %s", last)
}
