// Command relaybench measures the relay binary against a throwaway Postgres
// and an embedded Kafka broker: backlog drain rate against
// pg_recvlogical's ceiling, steady-state end-to-end latency, and peak RSS
// with a backlog and a stalled broker. It prints a table and writes
// bench/results/<date>-<host>.md.
//
// It is a program, not a test: it reports figures against targets and never
// fails on them, since a shared 2-core machine makes every figure noisy.
// bench/run.sh builds the relay binary and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	relayBin   string
	args       []string // as given, minus -relay, for the results file
	only       []string
	n          int
	writers    int
	partitions int

	latencyRates    []int
	latencyDuration time.Duration
	latencyWriters  int
	latencyTwin     bool

	sidecarRates    []int
	sidecarDuration time.Duration
	sidecarIdle     time.Duration
	sidecarRepeat   int
	sidecarProfile  string

	memN     int
	memBatch int
	snapN    int
	stall    time.Duration

	deliveryN        int
	deliveryDuration time.Duration

	waitTimeout time.Duration
	resultsDir  string
	noResults   bool
	note        string
	cpuProfile  string
}

var sections = []string{"drain", "latency", "sidecar", "memory", "delivery", "snapshot"}

func main() {
	if len(os.Args) == 3 && os.Args[1] == brokerArg {
		n, _ := strconv.Atoi(os.Args[2])
		serveBroker(n)
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "relaybench: %v\n", err)
		os.Exit(2)
	}
	// A second Ctrl-C while cleaning up kills us the default way; the
	// devenv watchdog still removes the Postgres cluster then.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "relaybench: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
		defer f.Close()
	}
	err = run(ctx, o)
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			fmt.Fprintln(os.Stderr, "relaybench: interrupted; servers and the relay were stopped")
		} else {
			fmt.Fprintf(os.Stderr, "relaybench: %v\n", err)
		}
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
	fs.StringVar(&o.relayBin, "relay", "bench/out/relay", "relay binary to measure")
	only := fs.String("only", strings.Join(sections, ","), "sections to run, comma-separated: "+strings.Join(sections, ","))
	fs.IntVar(&o.n, "n", 200000, "events per drain run")
	fs.IntVar(&o.writers, "writers", 4, "writer connections for the drain backlog")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of each auto-created topic")
	rates := fs.String("latency-rates", "1000,5000", "steady-state rates in events/s, comma-separated")
	fs.DurationVar(&o.latencyDuration, "latency-duration", 30*time.Second, "how long each latency rate runs")
	fs.IntVar(&o.latencyWriters, "latency-writers", 8, "writer connections sharing the latency rate")
	fs.BoolVar(&o.latencyTwin, "latency-twin", false, "also stream a twin slot with pg_recvlogical during the latency section, as a control for whether Postgres alone keeps up (adds a walsender's load)")
	env := fs.String("relay-env", "", "environment for the relay process only, comma-separated NAME=VALUE (e.g. GOMAXPROCS=2,GOGC=100)")
	sideRates := fs.String("sidecar-rates", "100,1000,3000", "sidecar section: everyday rates in events/s, comma-separated")
	fs.DurationVar(&o.sidecarDuration, "sidecar-duration", 20*time.Second, "sidecar section: how long each rate runs")
	fs.DurationVar(&o.sidecarIdle, "sidecar-idle", 30*time.Second, "sidecar section: how long the idle phase runs")
	fs.IntVar(&o.sidecarRepeat, "sidecar-repeat", 3, "sidecar section: repetitions of every phase; the medians are reported")
	fs.StringVar(&o.sidecarProfile, "sidecar-profile", "", "sidecar section: directory for one extra, uncounted run per rate that takes the relay's CPU profile (cpu-RATE.pprof) and a 1 s execution trace (trace-RATE.out) from /debug/pprof")
	fs.IntVar(&o.memN, "mem-n", 1000000, "events in the memory section's backlog")
	fs.IntVar(&o.memBatch, "mem-batch", 10000, "events per INSERT ... SELECT transaction of the memory backlog")
	fs.IntVar(&o.snapN, "snap-n", 1000000, "rows in the outbox before the relay's first start, for the snapshot section")
	fs.DurationVar(&o.stall, "stall", 10*time.Second, "how long the broker refuses produce in the memory section")
	fs.IntVar(&o.deliveryN, "delivery-n", 50000, "events of the delivery section's backlog, drained once per kafka.delivery mode")
	fs.DurationVar(&o.deliveryDuration, "delivery-duration", 15*time.Second, "how long the delivery section streams 1k events/s per mode")
	fs.DurationVar(&o.waitTimeout, "timeout", 10*time.Minute, "bound on each wait (writes, drains, deliveries)")
	fs.StringVar(&o.resultsDir, "results", "bench/results", "directory for the <date>-<host>.md results file")
	fs.BoolVar(&o.noResults, "no-results", false, "print the figures only, write no results file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of relaybench itself (kfake, writers, consumer) to this file: the harness shares the cores with the relay")
	fs.StringVar(&o.note, "note", "", "free text added to the results file (e.g. what else the machine was doing)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bench/run.sh [flags]  (or: go run ./bench/cmd/relaybench -relay BIN [flags])\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fs.Visit(func(f *flag.Flag) {
		// The note is printed in full further down the results file.
		if f.Name != "relay" && f.Name != "note" {
			o.args = append(o.args, "-"+f.Name+"="+f.Value.String())
		}
	})
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*only, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(sections, s) {
			return nil, fmt.Errorf("-only: unknown section %q (want some of %s)", s, strings.Join(sections, ","))
		}
		if !slices.Contains(o.only, s) {
			o.only = append(o.only, s)
		}
	}
	if len(o.only) == 0 {
		return nil, errors.New("-only selects no section")
	}
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-latency-rates: %q is not a positive rate", s)
		}
		o.latencyRates = append(o.latencyRates, r)
	}
	for _, kv := range strings.Split(*env, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("-relay-env: %q is not NAME=VALUE", kv)
		}
		relayEnv = append(relayEnv, kv)
	}
	for _, s := range strings.Split(*sideRates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-sidecar-rates: %q is not a positive rate", s)
		}
		o.sidecarRates = append(o.sidecarRates, r)
	}
	var problems []string
	check := func(ok bool, msg string) {
		if !ok {
			problems = append(problems, msg)
		}
	}
	// The 100-event run needs whole transactions, one per writer at least.
	check(o.n >= 100*o.writers && o.n%100 == 0, "-n must be a multiple of 100 and at least 100 x -writers")
	check(o.writers > 0, "-writers must be positive")
	check(o.partitions > 0, "-partitions must be positive")
	check(o.latencyDuration >= time.Second, "-latency-duration must be at least 1s")
	check(o.latencyWriters > 0, "-latency-writers must be positive")
	check(o.sidecarDuration >= 5*time.Second && o.sidecarIdle >= time.Second, "-sidecar-duration must be at least 5s and -sidecar-idle at least 1s")
	check(o.sidecarRepeat > 0, "-sidecar-repeat must be positive")
	check(o.memN > 0 && o.memBatch > 0, "-mem-n and -mem-batch must be positive")
	check(o.snapN > 0, "-snap-n must be positive")
	check(o.stall >= time.Second, "-stall must be at least 1s")
	check(o.deliveryN > 0 && o.deliveryDuration >= time.Second, "-delivery-n must be positive and -delivery-duration at least 1s")
	check(o.waitTimeout > 0, "-timeout must be positive")
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	if _, err := os.Stat(o.relayBin); err != nil {
		return nil, fmt.Errorf("relay binary: %w (build it with go build -o %s ./cmd/relay, or use bench/run.sh)", err, o.relayBin)
	}
	return o, nil
}

func (o *options) runs(section string) bool { return slices.Contains(o.only, section) }

// logf prints progress to stderr, so stdout holds only the results.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o *options) error {
	machine := describeMachine(ctx)
	res := &results{machine: machine, opts: o, started: time.Now()}
	logf("relaybench: sections %s on %d cores (%s)", strings.Join(o.only, ","), machine.cores, machine.cpu)

	var errs []error
	// A failed section does not stop the others: partial figures are still
	// worth reporting, and the error is reported with them.
	if o.runs("drain") {
		if err := runDrain(ctx, o, res); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
	}
	if o.runs("latency") && ctx.Err() == nil {
		if err := runLatency(ctx, o, res); err != nil {
			errs = append(errs, fmt.Errorf("latency: %w", err))
		}
	}
	if o.runs("sidecar") && ctx.Err() == nil {
		if err := runSidecar(ctx, o, res); err != nil {
			errs = append(errs, fmt.Errorf("sidecar: %w", err))
		}
	}
	if o.runs("memory") && ctx.Err() == nil {
		if err := runMemory(ctx, o, res); err != nil {
			errs = append(errs, fmt.Errorf("memory: %w", err))
		}
	}
	if o.runs("delivery") && ctx.Err() == nil {
		if err := runDelivery(ctx, o, res); err != nil {
			errs = append(errs, fmt.Errorf("delivery: %w", err))
		}
	}
	if o.runs("snapshot") && ctx.Err() == nil {
		if err := runSnapshot(ctx, o, res); err != nil {
			errs = append(errs, fmt.Errorf("snapshot: %w", err))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	res.finished = time.Now()
	res.loadEnd = loadAvg()
	res.errs = errs
	md := res.markdown()
	fmt.Println()
	fmt.Print(res.table())
	if !o.noResults {
		path, err := writeResults(o.resultsDir, machine, md)
		if err != nil {
			errs = append(errs, err)
		} else {
			fmt.Printf("\nresults written to %s\n", path)
		}
	}
	return errors.Join(errs...)
}
