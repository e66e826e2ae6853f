package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relay-dev/relay/internal/devenv"
)

// The sidecar section asks what the relay costs its neighbours at everyday
// rates: CPU per event and cores, idle included, next to the walsender's and
// the broker's, with the end-to-end latency it keeps. The broker runs in a
// child process here, so its CPU is its own and not mixed with the writers'
// and the consumer's.

// sidecarRun is one measured phase; rate 0 is idle (nothing written).
type sidecarRun struct {
	rate      int
	rep       int // repetition, from 1; 0 for the profiled extra run
	duration  time.Duration
	committed int
	dropped   int64
	achieved  float64
	lost      int

	cpu        cpuUse
	broker     float64 // cores
	switches   float64 // relay context switches (voluntary + involuntary) per second
	rss        int64   // VmRSS at the end of the phase
	hwm        int64   // VmHWM at the end of the phase
	p50, p99   time.Duration
	p999, pmax time.Duration
}

// perEvent is the relay's CPU time per committed event.
func (s sidecarRun) perEvent() time.Duration {
	if s.achieved <= 0 {
		return 0
	}
	return time.Duration(s.cpu.relay / s.achieved * float64(time.Second))
}

// The targets for this section; reported against, never enforced.
var (
	targetPerEvent = map[int]time.Duration{100: 150 * time.Microsecond, 1000: 100 * time.Microsecond}
	targetSideP99  = map[int]time.Duration{1000: 5 * time.Millisecond, 3000: 20 * time.Millisecond}
)

const (
	targetIdleCores = 0.001
	targetSideRSS   = 64 << 20
)

// brokerChild is the kfake broker in a process of its own.
type brokerChild struct {
	cmd  *exec.Cmd
	addr string
	in   io.WriteCloser
}

const brokerArg = "-serve-broker"

// serveBroker is the child's side: start kfake, print its address, serve
// until stdin closes or a signal comes.
func serveBroker(partitions int) {
	k, err := devenv.StartKafka(devenv.KafkaOptions{Partitions: partitions})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(k.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	}
	k.Close()
}

func startBrokerChild(partitions int) (*brokerChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &brokerChild{cmd: exec.Command(self, brokerArg, strconv.Itoa(partitions))}
	b.cmd.Stderr = os.Stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if b.in, err = b.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the broker process: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.close()
		return nil, fmt.Errorf("broker process: reading its address: %w", err)
	}
	b.addr = strings.TrimSpace(line)
	return b, nil
}

func (b *brokerChild) close() {
	_ = b.in.Close()
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
}

// ctxSwitches sums voluntary and involuntary context switches over the
// process's threads: each is a thread that went to sleep or was preempted,
// the cheapest outside view of wake-ups.
func ctxSwitches(pid int) float64 {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*", pid))
	var n float64
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += x
			}
		}
	}
	return n
}

func runSidecar(ctx context.Context, o *options, res *results) error {
	w, err := startSection(ctx, o, res, "sidecar")
	if err != nil {
		return err
	}
	defer w.close()
	// The in-process broker gives way to a child process.
	w.kafka.Close()
	w.kafka = nil
	b, err := startBrokerChild(o.partitions)
	if err != nil {
		return err
	}
	w.broker = b
	cfg, addr, err := w.relayConfigWith("sidecar", o.sidecarProfile != "")
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
	rcv := &receiver{at: map[string]time.Time{}}
	if err := writeBacklog(ctx, w, warmupEvents, 1, 1, time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
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
	pm := postmasterPid(w.pg.DataDir())
	snap := func() (cpuSnap, float64, float64) {
		bc, _ := procCPU(b.cmd.Process.Pid)
		return takeCPU(r.pid(), pm), bc, ctxSwitches(r.pid())
	}
	finish := func(sr *sidecarRun, a cpuSnap, ab, as float64) {
		e, eb, es := snap()
		sr.cpu = a.to(e)
		wall := e.at.Sub(a.at).Seconds()
		sr.broker = (eb - ab) / wall
		sr.switches = (es - as) / wall
		sr.rss, _ = procStatus(r.pid(), "VmRSS")
		sr.hwm, _ = procStatus(r.pid(), "VmHWM")
	}

	// Idle first: the relay has caught up and nothing is written. A
	// keepalive, a status update and a publication check fall into any
	// window of a few tens of seconds.
	for rep := 1; rep <= o.sidecarRepeat; rep++ {
		time.Sleep(2 * time.Second) // let the warm-up's acks and records settle
		logf("sidecar: idle for %s (%d/%d)", o.sidecarIdle, rep, o.sidecarRepeat)
		sr := sidecarRun{rep: rep, duration: o.sidecarIdle}
		a, ab, as := snap()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.sidecarIdle):
		}
		finish(&sr, a, ab, as)
		res.sidecar = append(res.sidecar, sr)
		logf("sidecar: idle (%d): relay %.4f cores, %.1f switches/s; walsender %.4f, broker %.4f; RSS %s", rep, sr.cpu.relay, sr.switches, sr.cpu.walsender, sr.broker, mb(sr.rss))
	}

	measure := func(rt, rep int) error {
		time.Sleep(time.Second)
		sr := sidecarRun{rate: rt, rep: rep, duration: o.sidecarDuration}
		lr := latencyRun{rate: rt, duration: o.sidecarDuration, writers: o.latencyWriters}
		var a cpuSnap
		var ab, as float64
		var profDone chan error
		if rep == 0 {
			profDone = make(chan error, 1)
			go func() { profDone <- profile(ctx, r, o.sidecarProfile, rt, o.sidecarDuration) }()
		}
		commits, err := pacedWrites(ctx, w, &lr, func() cpuSnap {
			if a.at.IsZero() {
				a, ab, as = snap()
				return a
			}
			finish(&sr, a, ab, as)
			return a
		})
		if err != nil {
			return err
		}
		err = waitUntil(ctx, r, time.Minute, 50*time.Millisecond, "every committed event at the consumer", func() (bool, error) {
			return rcv.has(commits), rcv.error()
		})
		if profDone != nil {
			if perr := <-profDone; perr != nil {
				logf("sidecar: profiling at %d/s: %v", rt, perr)
			}
		}
		lats := rcv.latencies(commits)
		sr.committed, sr.dropped, sr.achieved = lr.committed, lr.dropped, lr.achieved
		sr.lost = len(commits) - len(lats)
		if len(lats) > 0 {
			sr.p50, sr.p99, sr.p999 = percentile(lats, 0.50), percentile(lats, 0.99), percentile(lats, 0.999)
			sr.pmax = lats[len(lats)-1]
		}
		res.sidecar = append(res.sidecar, sr)
		if err != nil {
			return fmt.Errorf("%d events/s: %w (%d of %d received)", rt, err, len(lats), len(commits))
		}
		tag := strconv.Itoa(rep)
		if rep == 0 {
			tag = "profiled"
		}
		logf("sidecar: %d/s (%s): achieved %.0f/s; relay %.3f cores, %s/event, %.0f switches/s; walsender %.3f, broker %.3f; p50 %s p99 %s; RSS %s",
			rt, tag, sr.achieved, sr.cpu.relay, fmtDur(sr.perEvent()), sr.switches, sr.cpu.walsender, sr.broker, fmtDur(sr.p50), fmtDur(sr.p99), mb(sr.rss))
		return nil
	}
	// Repetitions interleave the rates, so a burst of load from elsewhere on
	// the machine spreads over all of them instead of spoiling one.
	for rep := 1; rep <= o.sidecarRepeat; rep++ {
		for _, rt := range o.sidecarRates {
			if err := measure(rt, rep); err != nil {
				return err
			}
		}
	}
	if o.sidecarProfile != "" {
		for _, rt := range o.sidecarRates {
			if err := measure(rt, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// profile takes a CPU profile over most of a phase and then a short
// execution trace (wake-ups, hand-offs between goroutines) from the relay's
// /debug/pprof.
func profile(ctx context.Context, r *relayProc, dir string, rt int, d time.Duration) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	secs := max(1, int(d.Seconds())-3)
	get := func(path, file string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.httpAddr+path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	time.Sleep(time.Second)
	if err := get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs-1), fmt.Sprintf("cpu-%d.pprof", rt)); err != nil {
		return err
	}
	return get("/debug/pprof/trace?seconds=1", fmt.Sprintf("trace-%d.out", rt))
}

// sidecarMedians groups the counted repetitions by rate (0 = idle), rates
// in the order run.
func sidecarMedians(runs []sidecarRun) (rates []int, by map[int][]sidecarRun) {
	by = map[int][]sidecarRun{}
	for _, s := range runs {
		if s.rep == 0 {
			continue
		}
		if _, ok := by[s.rate]; !ok {
			rates = append(rates, s.rate)
		}
		by[s.rate] = append(by[s.rate], s)
	}
	return rates, by
}

func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
