package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/relay-dev/relay/internal/devenv"
)

// The delivery section runs the same work through the relay in both
// kafka.delivery modes, one after the other on one Postgres: a backlog
// drain and a steady 1k/s stream. Each mode gets a fresh broker and its
// own slot, so neither sees the other's records or progress.

const (
	// Targets of the exactly-once issue: reported against, never enforced.
	targetEOSDrainRatio = 0.8
	targetEOSRate       = 1000
	targetEOSSlack      = 20 * time.Millisecond
	// eosInterval is the relay's default pipeline.transaction_interval.
	eosInterval = 100 * time.Millisecond
)

var deliveryModes = []string{"at_least_once", "exactly_once"}

// deliveryRun is one mode's figures.
type deliveryRun struct {
	mode      string
	events    int
	drain     time.Duration // process start -> the slot confirmed past the backlog
	drainCPU  time.Duration
	delivered int // what a read_committed consumer saw of the backlog, duplicates included
	distinct  int
	latency   latencyRun
}

func (d deliveryRun) drainRate() float64 { return rate(d.events, d.drain) }

func runDelivery(ctx context.Context, o *options, res *results) error {
	logf("delivery: starting PostgreSQL and Kafka")
	w, err := newWorld(ctx, o)
	if err != nil {
		return err
	}
	defer w.close()
	if res.pgVersion == "" {
		res.pgVersion = w.serverVersion(ctx)
	}
	// Each mode drains the backlog twice, in the order at_least_once,
	// exactly_once, exactly_once, at_least_once, and its faster pass
	// counts: the first decoder of a backlog pays for cold caches, and the
	// order must not favour either mode.
	order := []string{"at_least_once", "exactly_once", "exactly_once", "at_least_once"}
	slots := []string{"relay_alo_1", "relay_eos_1", "relay_eos_2", "relay_alo_2"}
	if err := w.createSlots(ctx, slots...); err != nil {
		return err
	}
	logf("delivery: writing %d events in 1-event transactions over %d connections", o.deliveryN, o.writers)
	if err := writeBacklog(ctx, w, o.deliveryN, 1, o.writers, o.waitTimeout); err != nil {
		return err
	}
	// A closing transaction whose position is read inside it: a slot
	// confirmed past that position holds the whole backlog as delivered.
	fence, err := w.closingEvent(ctx)
	if err != nil {
		return err
	}
	events := o.deliveryN + 1

	runs := make([]deliveryRun, len(deliveryModes))
	for i, mode := range deliveryModes {
		runs[i] = deliveryRun{mode: mode, events: events}
	}
	for i, mode := range order {
		d := deliveryRun{mode: mode, events: events}
		err := deliveryDrain(ctx, o, w, slots[i], fence, &d)
		if err != nil {
			res.delivery = runs
			return fmt.Errorf("%s drain: %w", mode, err)
		}
		r := &runs[slices.Index(deliveryModes, mode)]
		if r.drain == 0 || d.drain < r.drain {
			r.drain, r.drainCPU, r.delivered, r.distinct = d.drain, d.drainCPU, d.delivered, d.distinct
		}
	}
	slot := map[string]string{"at_least_once": slots[0], "exactly_once": slots[1]}
	for i, mode := range deliveryModes {
		if err := deliveryLatency(ctx, o, w, slot[mode], &runs[i]); err != nil {
			res.delivery = runs
			return fmt.Errorf("%s latency: %w", mode, err)
		}
	}
	res.delivery = runs
	return nil
}

// closingEvent commits one more event and returns a WAL position inside its
// transaction, before its commit record.
func (w *world) closingEvent(ctx context.Context) (string, error) {
	conn, err := w.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	var lsn string
	if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return "", err
	}
	e := newEventGen(99).next(-1)
	if _, err := tx.Exec(ctx, insertSQL, e.aggType, e.aggID, e.typ, e.payload); err != nil {
		return "", err
	}
	return lsn, tx.Commit(ctx)
}

// confirmedPast reports whether slot's confirmed_flush_lsn is beyond lsn.
func (w *world) confirmedPast(ctx context.Context, slot, lsn string) (bool, error) {
	var past bool
	err := w.queryRow(ctx, "SELECT coalesce(confirmed_flush_lsn > $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1", []any{slot, lsn}, &past)
	return past, err
}

// modeConfig is relayConfig for a slot and delivery mode.
func (w *world) modeConfig(name, slot, mode string) (path, httpAddr string, err error) {
	httpAddr, err = freeAddr()
	if err != nil {
		return "", "", err
	}
	cfg := fmt.Sprintf(`postgres:
  url: %s
  slot: %s
  publication: %s
kafka:
  brokers: [%q]
  delivery: %s
outbox:
  - table: public.outbox
http:
  listen: %q
log:
  level: warn
`, w.url(), slot, publication, w.kafka.Addr(), mode, httpAddr)
	path = filepath.Join(w.dir, name+".yaml")
	return path, httpAddr, os.WriteFile(path, []byte(cfg), 0o600)
}

// deliveryDrain times one mode's relay from process start until its slot
// is confirmed past the backlog: at least once that follows the acks, exactly
// once the Kafka commits, so both clocks stop at "consumers can have it and
// the relay will not send it again".
func deliveryDrain(ctx context.Context, o *options, w *world, slot, fence string, d *deliveryRun) error {
	if err := w.restartKafka(); err != nil {
		return err
	}
	cfg, addr, err := w.modeConfig("delivery-drain-"+d.mode, slot, d.mode)
	if err != nil {
		return err
	}
	logf("delivery: %s relay draining %d events", d.mode, d.events)
	r, err := startRelay(o.relayBin, cfg, addr)
	if err != nil {
		return err
	}
	defer r.stop()
	err = waitUntil(ctx, r, o.waitTimeout, pollEvery, "the slot confirmed past the backlog", func() (bool, error) {
		return w.confirmedPast(ctx, slot, fence)
	})
	if err != nil {
		return err
	}
	d.drain = time.Since(r.started)
	r.stop()
	d.drainCPU = r.cpu()
	if n := r.out.lines(); n > 0 {
		logf("delivery: the %s relay logged %d warning lines; tail:\n%s", d.mode, n, r.out.String())
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	recs, err := devenv.ReadCommitted(rctx, w.kafka.Addr(), topics()...)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		seen[rec.Headers["id"]] = true
	}
	d.delivered, d.distinct = len(recs), len(seen)
	logf("delivery: %s: %s (%.0f events/s), %s CPU; read_committed sees %d records, %d distinct",
		d.mode, fmtDur(d.drain), d.drainRate(), fmtDur(d.drainCPU), d.delivered, d.distinct)
	return nil
}

// deliveryLatency streams at targetEOSRate through one mode's relay, on a
// fresh broker and a fresh slot, measured by a read_committed consumer.
func deliveryLatency(ctx context.Context, o *options, w *world, slot string, d *deliveryRun) error {
	if err := w.restartKafka(); err != nil {
		return err
	}
	if err := w.dropSlots(ctx, slot); err != nil {
		return err
	}
	if err := w.createSlots(ctx, slot); err != nil {
		return err
	}
	cfg, addr, err := w.modeConfig("delivery-latency-"+d.mode, slot, d.mode)
	if err != nil {
		return err
	}
	r, err := startRelay(o.relayBin, cfg, addr)
	if err != nil {
		return err
	}
	defer r.stop()
	rcv := &receiver{at: map[string]time.Time{}, committed: true}
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone, err := rcv.start(cctx, w.kafka.Addr())
	if err != nil {
		stopConsumer()
		return err
	}
	defer func() {
		stopConsumer()
		<-consumerDone
	}()
	if err := writeBacklog(ctx, w, warmupEvents, 1, 1, time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := waitUntil(ctx, r, time.Minute, 50*time.Millisecond, "the consumer to read the warm-up events", func() (bool, error) {
		return rcv.total.Load() >= warmupEvents, rcv.error()
	}); err != nil {
		return err
	}
	lr := latencyRun{rate: targetEOSRate, duration: o.deliveryDuration, writers: o.latencyWriters}
	logf("delivery: %s at %d events/s for %s", d.mode, lr.rate, lr.duration)
	commits, err := pacedWrites(ctx, w, &lr, func() cpuSnap { return takeCPU(r.pid(), postmasterPid(w.pg.DataDir())) })
	if err != nil {
		return err
	}
	err = waitUntil(ctx, r, time.Minute, 50*time.Millisecond, "every committed event at the consumer", func() (bool, error) {
		return rcv.has(commits), rcv.error()
	})
	lats := rcv.latencies(commits)
	lr.lost = len(commits) - len(lats)
	if len(lats) > 0 {
		lr.p50, lr.p99, lr.p999 = percentile(lats, 0.50), percentile(lats, 0.99), percentile(lats, 0.999)
		lr.max = lats[len(lats)-1]
	}
	d.latency = lr
	logf("delivery: %s at %d/s: achieved %.0f/s, p50 %s p99 %s max %s, relay CPU %.2f cores",
		d.mode, lr.rate, lr.achieved, fmtDur(lr.p50), fmtDur(lr.p99), fmtDur(lr.max), lr.cpu.relay)
	return err
}

// deliveryRatio is exactly_once's drain rate over at_least_once's.
func deliveryRatio(runs []deliveryRun) float64 {
	if len(runs) < 2 || runs[0].drainRate() == 0 {
		return 0
	}
	return runs[1].drainRate() / runs[0].drainRate()
}

func (r *results) deliveryTable(p func(format string, args ...any)) {
	for _, d := range r.delivery {
		p("delivery\t%s: drain %d events\t%.0f events/s (%s)\t\t\n", d.mode, d.events, d.drainRate(), fmtDur(d.drain))
	}
	if ratio := deliveryRatio(r.delivery); ratio > 0 {
		p("delivery\tdrain exactly_once / at_least_once\t%.2f\t>= %.1f: %s\t\n", ratio, targetEOSDrainRatio, verdict(ratio >= targetEOSDrainRatio))
	}
	for _, d := range r.delivery {
		l := d.latency
		if l.committed == 0 {
			continue
		}
		target := ""
		if d.mode == "exactly_once" {
			bound := eosInterval + targetEOSSlack
			target = fmt.Sprintf("p99 <= %s: %s", fmtDur(bound), verdict(l.p99 <= bound && l.lost == 0))
		}
		p("delivery\t%s: %d/s p50 / p99 / max\t%s / %s / %s\t%s\t\n", d.mode, l.rate, fmtDur(l.p50), fmtDur(l.p99), fmtDur(l.max), target)
	}
}

func (r *results) deliveryMarkdown(p func(format string, args ...any)) {
	if len(r.delivery) == 0 {
		return
	}
	o := r.opts
	p("## Delivery modes\n\n")
	p("The same work through `kafka.delivery: at_least_once` and `exactly_once` (default `pipeline.transaction_interval` %s), one after the other on one Postgres, each on a fresh broker and its own slot. ", eosInterval)
	p("Drain: %d single-event transactions (plus one closing transaction) written before either relay starts, drained twice per mode (at_least_once, exactly_once, exactly_once, at_least_once, each on its own slot) and the faster pass of each mode counts; each relay is timed from process start until its slot's `confirmed_flush_lsn` passes the closing transaction (acks at least once, Kafka commits exactly once). ", o.deliveryN)
	p("Latency: %d events/s for %s, COMMIT returning to a read_committed franz-go consumer receiving the record. ", targetEOSRate, o.deliveryDuration)
	p("Targets: exactly_once drain >= %.1f x at_least_once; exactly_once p99 <= transaction_interval + %s.\n\n", targetEOSDrainRatio, fmtDur(targetEOSSlack))
	p("| mode | drain | relay CPU (drain) | read_committed records / distinct | %d/s p50 | p99 | max | lost | relay CPU (cores, latency) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n", targetEOSRate)
	for _, d := range r.delivery {
		l := d.latency
		p("| %s | %.0f events/s (%s) | %s | %d / %d | %s | **%s** | %s | %d | %.2f |\n", d.mode, d.drainRate(), fmtDur(d.drain), fmtDur(d.drainCPU),
			d.delivered, d.distinct, fmtDur(l.p50), fmtDur(l.p99), fmtDur(l.max), l.lost, l.cpu.relay)
	}
	if ratio := deliveryRatio(r.delivery); ratio > 0 {
		p("\nDrain ratio exactly_once / at_least_once: **%.2f** %s.\n", ratio, verdict(ratio >= targetEOSDrainRatio))
	}
	p("\n")
}
