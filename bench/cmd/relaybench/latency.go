package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// latencyRun is one fixed-rate phase: commit (COMMIT returned) to receive
// (an independent consumer got the record), per event.
type latencyRun struct {
	rate     int
	duration time.Duration
	writers  int

	committed int
	dropped   int64   // tokens no writer was free to take: the rate was not held
	achieved  float64 // committed events/s
	lost      int     // committed but not received before the wait ended

	p50, p99, p999, max time.Duration
	// perSecond is the p99 of the events committed in each second of the
	// run: a backlog that builds shows as a climb, a periodic stall as
	// spikes.
	perSecond []time.Duration
	// publishP99 bounds the relay's own hand-to-producer -> ack p99 (from
	// relay_publish_latency_seconds): how much of the end-to-end tail is
	// spent in the producer and broker rather than in WAL decoding and
	// the consumer.
	publishP99 float64
	cpu        cpuUse
	lag        lagSample // worst of samples taken every lagEvery
}

const lagEvery = 100 * time.Millisecond

// lagSample locates a backlog: WAL the walsender has not sent is Postgres's
// share (or the relay's, if it stops reading and the socket fills), WAL
// sent but not received sits in socket buffers, and a received but
// unacknowledged transaction is the relay's and the broker's.
type lagSample struct {
	walNotSent  int64         // pg_current_wal_lsn - the walsender's sent_lsn
	twinNotSent int64         // the same for pg_recvlogical's walsender, with -latency-twin
	walBehind   int64         // pg_current_wal_lsn - relay_received_lsn
	replLag     time.Duration // relay_replication_lag_seconds
	inflight    float64       // relay_inflight_events
	samples     int
}

func (l *lagSample) worst(o lagSample) {
	l.walNotSent = max(l.walNotSent, o.walNotSent)
	l.twinNotSent = max(l.twinNotSent, o.twinNotSent)
	l.walBehind = max(l.walBehind, o.walBehind)
	l.replLag = max(l.replLag, o.replLag)
	l.inflight = max(l.inflight, o.inflight)
	l.samples++
}

// sampleLag samples until ctx ends and returns the worst values seen.
func sampleLag(ctx context.Context, w *world, r *relayProc) <-chan lagSample {
	out := make(chan lagSample, 1)
	go func() {
		var worst lagSample
		defer func() { out <- worst }()
		conn, err := w.connect(ctx)
		if err != nil {
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		t := time.NewTicker(lagEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var current, notSent, twinNotSent int64
			err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0')::bigint,
				coalesce((SELECT pg_current_wal_lsn() - r.sent_lsn FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1), 0)::bigint,
				coalesce((SELECT pg_current_wal_lsn() - r.sent_lsn FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $2), 0)::bigint`,
				slotName, twinSlot).Scan(&current, &notSent, &twinNotSent)
			if err != nil {
				continue
			}
			m, err := r.metrics(ctx, "relay_received_lsn", "relay_replication_lag_seconds", "relay_inflight_events")
			if err != nil {
				continue
			}
			worst.worst(lagSample{
				walNotSent:  notSent,
				twinNotSent: twinNotSent,
				walBehind:   current - int64(m["relay_received_lsn"]),
				replLag:     time.Duration(m["relay_replication_lag_seconds"] * float64(time.Second)),
				inflight:    m["relay_inflight_events"],
			})
		}
	}()
	return out
}

const warmupEvents = 400

const publishHistogram = "relay_publish_latency_seconds"

func runLatency(ctx context.Context, o *options, res *results) error {
	w, err := startSection(ctx, o, res, "latency")
	if err != nil {
		return err
	}
	defer w.close()
	if o.latencyTwin {
		stopTwin, err := streamTwin(ctx, w)
		if err != nil {
			return err
		}
		defer stopTwin()
	}
	cfg, addr, err := w.relayConfig("latency")
	if err != nil {
		return err
	}
	r, err := startRelay(o.relayBin, cfg, addr)
	if err != nil {
		return err
	}
	defer r.stop()
	if err := w.waitActive(ctx, r, time.Minute); err != nil {
		return err
	}

	// Warm up: topics are created, the producer and consumer have their
	// connections and metadata, so the first measured events do not pay
	// for it.
	rcv := &receiver{at: map[string]time.Time{}}
	if err := writeBacklog(ctx, w, warmupEvents, 1, 1, time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := waitUntil(ctx, r, time.Minute, 50*time.Millisecond, "the warm-up events in Kafka", func() (bool, error) {
		c, err := w.count(ctx)
		return c >= warmupEvents, err
	}); err != nil {
		return err
	}
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone, err := rcv.start(cctx, w.addr())
	if err != nil {
		stopConsumer()
		return err
	}
	defer func() {
		stopConsumer()
		<-consumerDone
	}()
	if err := waitUntil(ctx, r, time.Minute, 50*time.Millisecond, "the consumer to read the warm-up events", func() (bool, error) {
		return rcv.total.Load() >= warmupEvents, rcv.error()
	}); err != nil {
		return err
	}

	for _, rt := range o.latencyRates {
		time.Sleep(time.Second) // let the previous phase's tail settle
		lr := latencyRun{rate: rt, duration: o.latencyDuration, writers: o.latencyWriters}
		logf("latency: %d events/s for %s over %d connections", rt, o.latencyDuration, o.latencyWriters)
		hBefore, herr := r.histogram(ctx, publishHistogram)
		lctx, stopLag := context.WithCancel(ctx)
		lagDone := sampleLag(lctx, w, r)
		commits, err := pacedWrites(ctx, w, &lr, func() cpuSnap { return takeCPU(r.pid(), postmasterPid(w.pg.DataDir())) })
		stopLag()
		lr.lag = <-lagDone
		if err != nil {
			return err
		}
		// Every committed event must arrive; the wait is generous because
		// a missing one is worth a clear error, not a skewed figure.
		err = waitUntil(ctx, r, time.Minute, 50*time.Millisecond, "every committed event at the consumer", func() (bool, error) {
			return rcv.has(commits), rcv.error()
		})
		if herr == nil {
			if hAfter, err := r.histogram(ctx, publishHistogram); err == nil {
				lr.publishP99, _ = bucketQuantile(hBefore, hAfter, 0.99)
			}
		}
		lats := rcv.latencies(commits)
		lr.perSecond = rcv.perSecondP99(commits)
		lr.lost = len(commits) - len(lats)
		if len(lats) > 0 {
			lr.p50, lr.p99, lr.p999 = percentile(lats, 0.50), percentile(lats, 0.99), percentile(lats, 0.999)
			lr.max = lats[len(lats)-1]
		}
		res.latency = append(res.latency, lr)
		if err != nil {
			return fmt.Errorf("%d events/s: %w (%d of %d received)", rt, err, len(lats), len(commits))
		}
		twin := ""
		if o.latencyTwin {
			twin = fmt.Sprintf(" (twin %d kB)", lr.lag.twinNotSent>>10)
		}
		logf("latency: %d/s: achieved %.0f/s, p50 %s p99 %s max %s; CPU (cores) relay %.2f, postgres %.2f (walsenders %.2f), relaybench %.2f, others %.2f; worst: WAL not sent %d kB%s, not received %d kB, replication lag %s, in flight %.0f",
			rt, lr.achieved, fmtDur(lr.p50), fmtDur(lr.p99), fmtDur(lr.max), lr.cpu.relay, lr.cpu.postgres, lr.cpu.walsender, lr.cpu.self, lr.cpu.others,
			lr.lag.walNotSent>>10, twin, lr.lag.walBehind>>10, fmtDur(lr.lag.replLag), lr.lag.inflight)
	}
	return nil
}

// streamTwin runs pg_recvlogical on a twin slot for the whole section: a
// control that shows whether Postgres alone keeps up with the write rate.
func streamTwin(ctx context.Context, w *world) (stop func(), err error) {
	bin, err := findRecvlogical()
	if err != nil {
		return nil, err
	}
	if err := w.createSlots(ctx, twinSlot); err != nil {
		return nil, err
	}
	out := newTail(4 << 10)
	cmd := exec.Command(bin, "-d", w.url(), "--slot", twinSlot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+publication, "-f", "/dev/null")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting pg_recvlogical: %w", err)
	}
	done := make(chan struct{})
	go func() {
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			logf("latency: twin pg_recvlogical ended: %v: %s", err, out.String())
		}
		close(done)
	}()
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}, nil
}

// commit is one event's id and the wall time right after its COMMIT
// returned.
type commit struct {
	id string
	at time.Time
}

const latencyInsertSQL = `INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`

// pacedWrites commits single-event transactions at lr.rate for
// lr.duration. A pacer hands out tokens on a 1ms ticker and writers share
// them, so a slow commit on one connection does not slow the rate; tokens
// that pile up beyond 50ms of backlog are dropped and counted, which makes
// a rate the machine cannot hold show up as such rather than as a burst.
//
// snap is called at the start and the end of the writes, while the writers'
// backends still exist, so their CPU is counted.
func pacedWrites(ctx context.Context, w *world, lr *latencyRun, snap func() cpuSnap) ([]commit, error) {
	total := int(float64(lr.rate) * lr.duration.Seconds())
	tokens := make(chan struct{}, max(16, lr.rate/20))
	ctx, cancel := context.WithTimeout(ctx, lr.duration+time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)

	conns := make([]*connWriter, lr.writers)
	for i := range conns {
		conn, err := w.connect(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		// Prepare before the clock starts, so the first events do not
		// pay for it.
		if _, err := conn.Prepare(ctx, "ins", latencyInsertSQL); err != nil {
			return nil, err
		}
		conns[i] = &connWriter{conn: conn, gen: newEventGen(uint64(1000 + i)), ids: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	}

	var dropped atomic.Int64
	cpu0 := snap()
	start := time.Now()
	g.Go(func() error {
		defer close(tokens)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		issued := 0
		for issued < total {
			select {
			case <-gctx.Done():
				return nil
			case <-tick.C:
			}
			due := min(total, int(time.Since(start).Seconds()*float64(lr.rate)))
			for ; issued < due; issued++ {
				select {
				case tokens <- struct{}{}:
				default:
					dropped.Add(1)
				}
			}
		}
		return nil
	})
	for i, cw := range conns {
		g.Go(func() error {
			seq := i << 32
			for range tokens {
				e := cw.gen.next(seq)
				seq++
				id := cw.uuid()
				// Autocommit: Exec returns once the single-statement
				// transaction has committed.
				if _, err := cw.conn.Exec(gctx, "ins", id, e.aggType, e.aggID, e.typ, e.payload); err != nil {
					return fmt.Errorf("writing at %d events/s: %w", lr.rate, err)
				}
				cw.commits = append(cw.commits, commit{id: id, at: time.Now()})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	lr.cpu = cpu0.to(snap())
	var commits []commit
	for _, cw := range conns {
		commits = append(commits, cw.commits...)
	}
	lr.committed = len(commits)
	lr.dropped = dropped.Load()
	lr.achieved = rate(len(commits), elapsed)
	return commits, nil
}

type connWriter struct {
	conn    *pgx.Conn
	gen     *eventGen
	ids     *rand.Rand
	commits []commit
}

// uuid makes a random (version 4) UUID in the text form Postgres prints,
// which is what the relay puts in the id header.
func (c *connWriter) uuid() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := c.ids.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// receiver consumes the outbox topics with franz-go, independently of the
// relay's sarama, and notes when each id first arrived.
type receiver struct {
	// committed reads as a consumer with isolation.level=read_committed,
	// which exactly-once delivery needs: records show at their commit.
	committed bool

	mu    sync.Mutex
	at    map[string]time.Time
	err   error
	total atomic.Int64
}

func (rc *receiver) start(ctx context.Context, brokers string) (<-chan struct{}, error) {
	isolation := kgo.ReadUncommitted()
	if rc.committed {
		isolation = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers),
		kgo.ConsumeTopics(topics()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(isolation),
	)
	if err != nil {
		return nil, fmt.Errorf("creating the kafka consumer: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cl.Close()
		for {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			if ctx.Err() != nil {
				return
			}
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.Canceled) {
					rc.mu.Lock()
					rc.err = fmt.Errorf("consuming %s partition %d: %w", t, p, err)
					rc.mu.Unlock()
				}
			})
			rc.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				rc.total.Add(1)
				for _, h := range r.Headers {
					if h.Key == "id" {
						if _, seen := rc.at[string(h.Value)]; !seen {
							rc.at[string(h.Value)] = now
						}
						break
					}
				}
			})
			rc.mu.Unlock()
		}
	}()
	return done, nil
}

func (rc *receiver) error() error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.err
}

func (rc *receiver) has(commits []commit) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, c := range commits {
		if _, ok := rc.at[c.id]; !ok {
			return false
		}
	}
	return true
}

// latencies returns receive minus commit for every received event, sorted.
func (rc *receiver) latencies(commits []commit) []time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]time.Duration, 0, len(commits))
	for _, c := range commits {
		if at, ok := rc.at[c.id]; ok {
			out = append(out, at.Sub(c.at))
		}
	}
	slices.Sort(out)
	return out
}

func (rc *receiver) perSecondP99(commits []commit) []time.Duration {
	if len(commits) == 0 {
		return nil
	}
	first := commits[0].at
	for _, c := range commits {
		if c.at.Before(first) {
			first = c.at
		}
	}
	rc.mu.Lock()
	var buckets [][]time.Duration
	for _, c := range commits {
		at, ok := rc.at[c.id]
		if !ok {
			continue
		}
		i := int(c.at.Sub(first) / time.Second)
		for len(buckets) <= i {
			buckets = append(buckets, nil)
		}
		buckets[i] = append(buckets[i], at.Sub(c.at))
	}
	rc.mu.Unlock()
	out := make([]time.Duration, len(buckets))
	for i, b := range buckets {
		slices.Sort(b)
		out[i] = percentile(b, 0.99)
	}
	return out
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
