package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// drainRun is one backlog drained twice: by pg_recvlogical (the ceiling:
// what the walsender can decode and send) and by the relay (decode, map,
// produce, wait for acks).
type drainRun struct {
	txnSize   int
	events    int
	writeTime time.Duration
	walBytes  int64

	ceiling    time.Duration
	ceilingCPU time.Duration

	relay       time.Duration
	firstRecord time.Duration // process start -> first record in Kafka: start-up's share
	relayCPU    time.Duration
	relayPeak   int64  // VmHWM
	delivered   int64  // records counted at the end; > events means duplicates
	relayNotes  int    // lines the relay logged at warn or above
	cpu         cpuUse // while the relay drained
}

func rate(events int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(events) / d.Seconds()
}

func (d drainRun) ceilingRate() float64 { return rate(d.events, d.ceiling) }
func (d drainRun) relayRate() float64   { return rate(d.events, d.relay) }

func (d drainRun) ratio() float64 {
	if d.ceilingRate() == 0 {
		return 0
	}
	return d.relayRate() / d.ceilingRate()
}

func runDrain(ctx context.Context, o *options, res *results) error {
	recv, err := findRecvlogical()
	if err != nil {
		return err
	}
	logf("drain: starting PostgreSQL and Kafka")
	w, err := newWorld(ctx, o)
	if err != nil {
		return err
	}
	defer w.close()
	res.pgVersion = w.serverVersion(ctx)

	for i, txnSize := range []int{1, 100} {
		if i > 0 {
			// A fresh slot pair and broker, so the second run decodes only
			// its own backlog and counts from zero.
			if err := w.dropSlots(ctx, slotName, twinSlot, twinAfterSlot); err != nil {
				return err
			}
			if err := w.exec(ctx, "TRUNCATE public.outbox"); err != nil {
				return err
			}
			if err := w.restartKafka(); err != nil {
				return err
			}
		}
		d := drainRun{txnSize: txnSize, events: o.n}
		err := drainOnce(ctx, o, w, recv, &d)
		if d.ceiling > 0 || d.relay > 0 {
			res.drain = append(res.drain, d)
		}
		if err != nil {
			return fmt.Errorf("%d-event transactions: %w", txnSize, err)
		}
	}
	return nil
}

func drainOnce(ctx context.Context, o *options, w *world, recv string, d *drainRun) error {
	// Both slots start before any data, back to back, so they decode the
	// same WAL.
	if err := w.createSlots(ctx, slotName, twinSlot, twinAfterSlot); err != nil {
		return err
	}
	startLSN, err := w.currentLSN(ctx)
	if err != nil {
		return err
	}
	logf("drain: writing %d events in %d-event transactions over %d connections", d.events, d.txnSize, o.writers)
	t0 := time.Now()
	if err := writeBacklog(ctx, w, d.events, d.txnSize, o.writers, o.waitTimeout); err != nil {
		return err
	}
	d.writeTime = time.Since(t0)
	endLSN, err := w.currentLSN(ctx)
	if err != nil {
		return err
	}
	if err := w.queryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint", []any{endLSN, startLSN}, &d.walBytes); err != nil {
		return err
	}
	logf("drain: wrote %d events in %s (%.0f/s), %d MB of WAL", d.events, d.writeTime.Round(time.Millisecond), rate(d.events, d.writeTime), d.walBytes>>20)

	logf("drain: pg_recvlogical draining slot %s to %s", twinSlot, endLSN)
	if d.ceiling, d.ceilingCPU, err = recvlogical(ctx, recv, w.url(), twinSlot, endLSN, o.waitTimeout); err != nil {
		return err
	}
	logf("drain: pg_recvlogical: %s (%.0f events/s)", d.ceiling.Round(time.Millisecond), d.ceilingRate())

	logf("drain: relay draining slot %s", slotName)
	if err := relayDrain(ctx, o, w, d); err != nil {
		return err
	}
	// Whoever decodes the backlog first pays for cold caches, so the ceiling
	// is also measured after the relay and the faster pass counts: the relay
	// must not look good merely for going second.
	after, afterCPU, err := recvlogical(ctx, recv, w.url(), twinAfterSlot, endLSN, o.waitTimeout)
	if err != nil {
		return err
	}
	logf("drain: pg_recvlogical after the relay: %s (%.0f events/s)", after.Round(time.Millisecond), rate(d.events, after))
	if after < d.ceiling {
		d.ceiling, d.ceilingCPU = after, afterCPU
	}
	return nil
}

// recvlogical times pg_recvlogical from its start to its exit at endpos.
func recvlogical(ctx context.Context, bin, url, slot, endLSN string, timeout time.Duration) (elapsed, cpu time.Duration, err error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "-d", url, "--slot", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+publication,
		"--endpos", endLSN, "-f", "/dev/null")
	out := newTail(4 << 10)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err = cmd.Run()
	elapsed = time.Since(start)
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return 0, 0, fmt.Errorf("pg_recvlogical did not reach %s within %s: %s", endLSN, timeout, out.String())
		}
		return 0, 0, fmt.Errorf("pg_recvlogical: %w: %s", err, out.String())
	}
	return elapsed, cpu, nil
}

// relayRun is one relay process timed from its start until Kafka holds the
// records it was started for.
type relayRun struct {
	elapsed     time.Duration // process start -> every record in Kafka
	firstRecord time.Duration // process start -> first record: start-up's share
	delivered   int64         // records counted at the end; more than asked means duplicates
	peak        int64         // VmHWM
	cpu         cpuUse        // of every party while the relay ran
	relayCPU    time.Duration
	notes       int    // lines the relay logged at warn or above
	output      string // what it printed (the tail it keeps), for those lines
}

// timeRelay starts the relay with a config named name and waits until Kafka
// holds n records: start-up and topic creation are part of what a relay
// facing a backlog pays too.
func timeRelay(ctx context.Context, o *options, w *world, name string, n int) (relayRun, error) {
	var run relayRun
	cfg, addr, err := w.relayConfig(name)
	if err != nil {
		return run, err
	}
	r, err := startRelay(o.relayBin, cfg, addr)
	if err != nil {
		return run, err
	}
	defer r.stop()
	peak := &peakRSS{pid: r.pid()}
	cpu0 := takeCPU(r.pid(), postmasterPid(w.pg.DataDir()))
	err = waitUntil(ctx, r, o.waitTimeout, pollEvery, fmt.Sprintf("%d records in Kafka", n), func() (bool, error) {
		peak.sample()
		c, err := w.count(ctx)
		if err != nil {
			return false, err
		}
		run.delivered = c
		if c > 0 && run.firstRecord == 0 {
			run.firstRecord = time.Since(r.started)
		}
		return c >= int64(n), nil
	})
	if err != nil {
		return run, fmt.Errorf("%w (%d of %d delivered)", err, run.delivered, n)
	}
	run.elapsed = time.Since(r.started)
	run.cpu = cpu0.to(takeCPU(r.pid(), postmasterPid(w.pg.DataDir())))
	peak.sample()
	r.stop()
	run.peak = peak.peak
	run.relayCPU = r.cpu()
	run.notes = r.out.lines()
	if run.notes > 0 {
		run.output = r.out.String()
	}
	return run, nil
}

// relayDrain times the relay draining the backlog d describes.
func relayDrain(ctx context.Context, o *options, w *world, d *drainRun) error {
	run, err := timeRelay(ctx, o, w, "drain-"+strconv.Itoa(d.txnSize), d.events)
	d.delivered = run.delivered
	if err != nil {
		return err
	}
	d.relay, d.firstRecord, d.cpu = run.elapsed, run.firstRecord, run.cpu
	d.relayPeak, d.relayCPU, d.relayNotes = run.peak, run.relayCPU, run.notes
	logf("drain: relay: %s (%.0f events/s; first record after %s), peak RSS %d MB, %s CPU",
		d.relay.Round(time.Millisecond), d.relayRate(), d.firstRecord.Round(time.Millisecond), d.relayPeak>>20, d.relayCPU.Round(time.Millisecond))
	if d.relayNotes > 0 {
		logf("drain: the relay logged %d warning lines; tail:\n%s", d.relayNotes, run.output)
	}
	return nil
}

const insertSQL = `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4)`

// writeBacklog commits n events in txnSize-event transactions, spread over
// writers connections.
func writeBacklog(ctx context.Context, w *world, n, txnSize, writers int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	txns := n / txnSize
	g, gctx := errgroup.WithContext(ctx)
	for wr := range writers {
		g.Go(func() error {
			conn, err := w.connect(gctx)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(gctx))
			gen := newEventGen(uint64(wr))
			for t := wr; t < txns; t += writers {
				if err := writeTxn(gctx, conn, gen, t*txnSize, txnSize); err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("writing the backlog took longer than %s: %w", timeout, err)
					}
					return fmt.Errorf("writing the backlog: %w", err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func writeTxn(ctx context.Context, conn *pgx.Conn, gen *eventGen, seq, size int) error {
	if size == 1 {
		// Autocommit: one round trip, one transaction, as a service
		// writing a lone event with its business row would cost.
		e := gen.next(seq)
		_, err := conn.Exec(ctx, insertSQL, e.aggType, e.aggID, e.typ, e.payload)
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	b := &pgx.Batch{}
	for i := range size {
		e := gen.next(seq + i)
		b.Queue(insertSQL, e.aggType, e.aggID, e.typ, e.payload)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// event is one outbox row's content.
type event struct {
	aggType, aggID, typ string
	payload             string
}

// eventGen makes events over 1000 keys; a key always belongs to the same
// aggregate type, as an aggregate id does in a real service.
type eventGen struct {
	rng *rand.Rand
}

func newEventGen(seed uint64) *eventGen {
	return &eventGen{rng: rand.New(rand.NewPCG(seed, 0x5eed))}
}

const numKeys = 1000

// payloadPad brings the payload to about 200 bytes of JSON.
const payloadPad = "lorem-ipsum-dolor-sit-amet-consectetur-adipiscing-elit-sed-do-eiusmod-tempor"

func (g *eventGen) next(seq int) event {
	k := g.rng.IntN(numKeys)
	at := aggregateTypes[k%len(aggregateTypes)]
	id := "k-" + strconv.Itoa(k)
	amount := g.rng.IntN(1000000)
	payload := fmt.Sprintf(`{"aggregateId": %q, "seq": %d, "amount": %d.%02d, "currency": "EUR", "status": "created", "note": %q}`,
		id, seq, amount/100, amount%100, payloadPad)
	return event{aggType: at, aggID: id, typ: at + "Created", payload: payload}
}
