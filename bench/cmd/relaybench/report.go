package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets README.md states under Performance. They are reported against,
// never enforced: on a shared 2-core machine every figure is noisy.
const (
	targetRatio    = 0.9
	targetP99      = 10 * time.Millisecond
	targetP99Rate  = 5000
	targetDrainRSS = 64 << 20
	// flatSlack is how much RSS may move over the second half of the
	// stall, once the relay has hit its in-flight cap, and still count as
	// flat: the garbage collector's cycles alone move it by a few MB.
	flatSlack = 8 << 20
)

type machine struct {
	host, kernel, cpu, ram string
	cores                  int
	goVersion              string // the toolchain on PATH
	relayCommit            string // HEAD of the work tree the relay was built from
	treeState              string // what that tree changes on top of HEAD
	loadStart              string
}

type results struct {
	machine
	opts              *options
	started, finished time.Time
	pgVersion         string
	loadEnd           string
	drain             []drainRun
	latency           []latencyRun
	sidecar           []sidecarRun
	memory            *memoryRun
	delivery          []deliveryRun
	snapshot          *snapshotRun
	errs              []error
}

func describeMachine(ctx context.Context) machine {
	m := machine{cores: runtime.NumCPU(), cpu: "unknown", ram: "unknown"}
	m.host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if v, err := parseStatusField(string(b), "MemTotal"); err == nil {
			m.ram = fmt.Sprintf("%.1f GiB", float64(v)/(1<<30))
		}
	}
	m.kernel = strings.TrimSpace(cmdOutput(ctx, "uname", "-r"))
	m.goVersion = strings.TrimPrefix(strings.TrimSpace(cmdOutput(ctx, "go", "version")), "go version ")
	if m.goVersion == "" {
		m.goVersion = runtime.Version()
	}
	// GOFLAGS may carry -buildvcs=false, so the binary need not know its
	// commit: ask git about the tree it was built from.
	m.relayCommit = strings.TrimSpace(cmdOutput(ctx, "git", "rev-parse", "--short=12", "HEAD"))
	if m.relayCommit == "" {
		m.relayCommit = "unknown"
	}
	if st := cmdOutput(ctx, "git", "status", "--porcelain", "--untracked-files=no"); st != "" {
		var files []string
		for _, l := range strings.Split(strings.TrimRight(st, "\n"), "\n") {
			if len(l) > 3 {
				files = append(files, l[3:])
			}
		}
		// Others' uncommitted work is in the binary too: the commit
		// alone does not say what was measured.
		m.treeState = "uncommitted changes in " + strings.Join(files, ", ")
	}
	m.loadStart = loadAvg()
	return m
}

func cmdOutput(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// flat says whether RSS stayed within flatSlack over the second half of the
// stall samples.
func (m *memoryRun) flat() (bool, int64) {
	if len(m.samples) < 2 {
		return false, 0
	}
	lo, hi := minMax(m.samples[len(m.samples)/2:])
	return hi-lo <= flatSlack, hi - lo
}

func txnLabel(size int) string {
	if size == 1 {
		return "1-event txns"
	}
	return fmt.Sprintf("%d-event txns", size)
}

// table is the short summary printed at the end.
func (r *results) table() string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "section\tmeasure\tfigure\ttarget\t")
	for _, d := range r.drain {
		l := txnLabel(d.txnSize)
		fmt.Fprintf(tw, "drain\t%s: pg_recvlogical\t%.0f events/s (%s)\t\t\n", l, d.ceilingRate(), fmtDur(d.ceiling))
		fmt.Fprintf(tw, "drain\t%s: relay\t%.0f events/s (%s)\t\t\n", l, d.relayRate(), fmtDur(d.relay))
		if d.relay > 0 {
			fmt.Fprintf(tw, "drain\t%s: ratio\t%.2f\t>= %.1f: %s\t\n", l, d.ratio(), targetRatio, verdict(d.ratio() >= targetRatio))
			fmt.Fprintf(tw, "drain\t%s: relay peak RSS\t%s\t<= %s: %s\t\n", l, mb(d.relayPeak), mb(targetDrainRSS), verdict(d.relayPeak <= targetDrainRSS))
		}
	}
	for _, l := range r.latency {
		target := ""
		if l.rate == targetP99Rate {
			target = fmt.Sprintf("p99 <= %s: %s", fmtDur(targetP99), verdict(l.p99 <= targetP99 && l.lost == 0))
		}
		fmt.Fprintf(tw, "latency\t%d/s (achieved %.0f/s) p50 / p99 / max\t%s / %s / %s\t%s\t\n", l.rate, l.achieved, fmtDur(l.p50), fmtDur(l.p99), fmtDur(l.max), target)
	}
	rates, by := sidecarMedians(r.sidecar)
	for _, rt := range rates {
		rs := by[rt]
		cores := median(rs, func(s sidecarRun) float64 { return s.cpu.relay })
		if rt == 0 {
			fmt.Fprintf(tw, "sidecar\tidle: relay cores (median of %d)\t%.4f\t<= %.3f: %s\t\n", len(rs), cores, targetIdleCores, verdict(cores <= targetIdleCores))
			continue
		}
		per := time.Duration(median(rs, func(s sidecarRun) float64 { return float64(s.perEvent()) }))
		p99 := time.Duration(median(rs, func(s sidecarRun) float64 { return float64(s.p99) }))
		target := ""
		if t, ok := targetPerEvent[rt]; ok {
			target = fmt.Sprintf("CPU/event <= %s: %s", fmtDur(t), verdict(per <= t))
		}
		if t, ok := targetSideP99[rt]; ok {
			if target != "" {
				target += "; "
			}
			target += fmt.Sprintf("p99 <= %s: %s", fmtDur(t), verdict(p99 <= t))
		}
		fmt.Fprintf(tw, "sidecar\t%d/s: relay CPU/event, cores, p99 (median of %d)\t%s, %.3f, %s\t%s\t\n", rt, len(rs), fmtDur(per), cores, fmtDur(p99), target)
	}
	if m := r.memory; m != nil && len(m.samples) > 0 {
		ok, moved := m.flat()
		fmt.Fprintf(tw, "memory\t%dk backlog, %s stall: RSS min / max\t%s / %s\tflat: %s (2nd half moved %s)\t\n", m.events/1000, m.stall, mb(m.stallMin), mb(m.stallMax), verdict(ok), mb(moved))
		if m.drainAfter > 0 {
			fmt.Fprintf(tw, "memory\t%dk backlog: peak RSS, drain after stall\t%s, %.0f events/s\t\t\n", m.events/1000, mb(m.peak), rate(m.events, m.drainAfter))
		}
	}
	r.deliveryTable(func(format string, args ...any) { fmt.Fprintf(tw, format, args...) })
	if s := r.snapshot; s != nil {
		fmt.Fprintf(tw, "snapshot\t%dk rows before the first start: rate\t%.0f rows/s (%s)\t>= %d rows/s: %s\t\n", s.events/1000, s.rate(), fmtDur(s.relay), targetSnapshotRate, verdict(s.rate() >= targetSnapshotRate))
		fmt.Fprintf(tw, "snapshot\t%dk rows: relay peak RSS\t%s\t\t\n", s.events/1000, mb(s.peak))
	}
	tw.Flush()
	return b.String()
}

// markdown is the results file: the machine, the figures, and what makes
// them noisy, so a later run can be compared with it.
func (r *results) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.opts
	p("# relay benchmark, %s on %s\n\n", r.started.Format("2006-01-02"), r.host)
	p("Produced by `bench/run.sh %s` (bench/cmd/relaybench), %s to %s.\n\n",
		strings.Join(o.args, " "), r.started.Format("15:04:05 MST"), r.finished.Format("15:04:05"))
	p("## Machine\n\n| | |\n| --- | --- |\n")
	p("| host | %s |\n| cores (nproc) | %d |\n| CPU | %s |\n| RAM | %s |\n| kernel | %s |\n", r.host, r.cores, r.cpu, r.ram, r.kernel)
	p("| PostgreSQL | %s (devenv: fsync off, synchronous_commit on, wal_level logical) |\n", r.pgVersion)
	p("| Kafka | kfake (franz-go), in the benchmark's own process, %d partitions per topic |\n", o.partitions)
	p("| Go | %s |\n| git commit | %s |\n", r.goVersion, r.relayCommit)
	if r.treeState != "" {
		p("| work tree | %s |\n", r.treeState)
	}
	p("| load average (1/5/15 min) | %s at start, %s at end |\n\n", r.loadStart, r.loadEnd)

	if len(r.drain) > 0 {
		p("## Backlog drain\n\n")
		p("%d events written before the relay starts (%d writer connections, ~200-byte jsonb payloads, %d keys, %d aggregate types = topics). ",
			o.n, o.writers, numKeys, len(aggregateTypes))
		p("The relay's slot and two twin slots are created back to back before the writes; pg_recvlogical (pgoutput, proto 1, to /dev/null) drains one twin before the relay and the other after it, up to the post-write LSN, and the faster pass is the ceiling (the first decoder of a backlog pays for cold caches). ")
		p("The relay is timed from process start until Kafka's high watermarks sum to the event count (polled every %s). Target: ratio >= %.1f, peak RSS <= %s.\n\n", pollEvery, targetRatio, mb(targetDrainRSS))
		p("| transactions | WAL | pg_recvlogical | relay | ratio | relay peak RSS | relay first record | relay CPU | pg_recvlogical CPU |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, d := range r.drain {
			p("| %s | %d MB | %.0f events/s (%s) | %.0f events/s (%s) | **%.2f** %s | %s %s | %s | %s | %s |\n",
				txnLabel(d.txnSize), d.walBytes>>20, d.ceilingRate(), fmtDur(d.ceiling), d.relayRate(), fmtDur(d.relay),
				d.ratio(), verdict(d.ratio() >= targetRatio), mb(d.relayPeak), verdict(d.relayPeak <= targetDrainRSS),
				fmtDur(d.firstRecord), fmtDur(d.relayCPU), fmtDur(d.ceilingCPU))
		}
		p("\nRelay first record: from process start to the first record in Kafka (connecting, start-up checks, topic creation). CPU: user + system of the process over its whole run.\n")
		p("\nCPU while the relay drained, in cores (of %d):\n\n| transactions | relay | Postgres (of which walsenders) | relaybench (kfake, counting) | other processes | machine |\n| --- | --- | --- | --- | --- | --- |\n", r.cores)
		for _, d := range r.drain {
			p("| %s | %.2f | %.2f (%.2f) | %.2f | %.2f | %.2f |\n", txnLabel(d.txnSize), d.cpu.relay, d.cpu.postgres, d.cpu.walsender, d.cpu.self, d.cpu.others, d.cpu.machine)
		}
		for _, d := range r.drain {
			if d.delivered > int64(d.events) {
				p("\n%s: Kafka held %d records for %d events (duplicates from a pipeline restart).\n", txnLabel(d.txnSize), d.delivered, d.events)
			}
		}
		p("\n")
	}
	if len(r.latency) > 0 {
		p("## Steady-state latency\n\n")
		p("Relay running and caught up; single-event transactions at a fixed rate from %d connections sharing a 1 ms token pacer. ", o.latencyWriters)
		p("Latency is the time from COMMIT returning to an independent franz-go consumer receiving the record. Target: p99 <= %s at %d/s.\n\n", fmtDur(targetP99), targetP99Rate)
		p("| rate | duration | achieved | events | p50 | p99 | p99.9 | max | lost | relay produce→ack p99 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, l := range r.latency {
			pub := "n/a"
			switch {
			case math.IsInf(l.publishP99, 1):
				pub = "beyond the largest bucket"
			case l.publishP99 > 0:
				pub = "≤ " + fmtDur(time.Duration(l.publishP99*float64(time.Second)))
			}
			p("| %d/s | %s | %.0f/s | %d | %s | **%s** | %s | %s | %d | %s |\n", l.rate, l.duration, l.achieved, l.committed, fmtDur(l.p50), fmtDur(l.p99), fmtDur(l.p999), fmtDur(l.max), l.lost, pub)
		}
		p("\nCPU during each run, in cores (of %d):\n\n| rate | relay | Postgres (of which walsenders) | relaybench (kfake, writers, consumer) | other processes | machine |\n| --- | --- | --- | --- | --- | --- |\n", r.cores)
		for _, l := range r.latency {
			p("| %d/s | %.2f | %.2f (%.2f) | %.2f | %.2f | %.2f |\n", l.rate, l.cpu.relay, l.cpu.postgres, l.cpu.walsender, l.cpu.self, l.cpu.others, l.cpu.machine)
		}
		p("\nWhere a backlog sat, worst of samples every %s: WAL the relay's walsender had not yet decoded and sent (`pg_current_wal_lsn - sent_lsn`), WAL the relay had not received (`- relay_received_lsn`), the relay's `relay_replication_lag_seconds` and `relay_inflight_events`", lagEvery)
		if o.latencyTwin {
			p(", and the same not-sent figure for a twin slot streamed by pg_recvlogical (`-latency-twin`)")
		}
		p(":\n\n| rate | WAL not sent | WAL not received | replication lag | in flight |")
		if o.latencyTwin {
			p(" twin WAL not sent |")
		}
		p("\n| --- | --- | --- | --- | --- |")
		if o.latencyTwin {
			p(" --- |")
		}
		p("\n")
		for _, l := range r.latency {
			p("| %d/s | %d kB | %d kB | %s | %.0f |", l.rate, l.lag.walNotSent>>10, l.lag.walBehind>>10, fmtDur(l.lag.replLag), l.lag.inflight)
			if o.latencyTwin {
				p(" %d kB |", l.lag.twinNotSent>>10)
			}
			p("\n")
		}
		p("\nThe last column of the latency table is the bucket bound of the relay's own `relay_publish_latency_seconds` (handed to the producer → acked) over the same events.\n")
		for _, l := range r.latency {
			var s []string
			for _, d := range l.perSecond {
				s = append(s, fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)))
			}
			p("\np99 of each second at %d/s (ms): %s\n", l.rate, strings.Join(s, " "))
		}
		for _, l := range r.latency {
			if l.dropped > 0 {
				p("\nAt %d/s the writers fell behind: %d events were not written (the pacer drops tokens more than 50 ms late).\n", l.rate, l.dropped)
			}
		}
		p("\n")
	}
	if len(r.sidecar) > 0 {
		r.sidecarMarkdown(p)
	}
	if m := r.memory; m != nil {
		p("## Memory\n\n")
		p("Peak RSS (VmHWM) during the drains is in the drain table. Here %d events (%d MB of WAL, written in %d-event INSERT ... SELECT transactions) wait before the relay starts, and the broker refuses every produce (NOT_ENOUGH_REPLICAS) for %s from the relay's first attempt; RSS (VmRSS) is sampled every %s. ",
			m.events, m.walBytes>>20, o.memBatch, m.stall, rssEvery)
		p("Target: flat RSS during the stall (the relay stops reading WAL at its in-flight cap).\n\n")
		ok, moved := m.flat()
		p("| stall RSS min | stall RSS max | 2nd half moved | flat | produce refused | in flight at stall end | peak RSS (whole run) | drain after stall |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		drain := "not finished"
		if m.drainAfter > 0 {
			drain = fmt.Sprintf("%s (%.0f events/s)", fmtDur(m.drainAfter), rate(m.events, m.drainAfter))
		}
		p("| %s | %s | %s | %s | %d requests | %.0f events, %s | %s | %s |\n\n", mb(m.stallMin), mb(m.stallMax), mb(moved), verdict(ok),
			m.refused, m.inflight, mb(int64(m.inflightBytes)), mb(m.peak), drain)
		var s []string
		for _, v := range m.samples {
			s = append(s, fmt.Sprintf("%.0f", float64(v)/(1<<20)))
		}
		p("RSS samples during the stall (MB): %s. Pipeline restarts: %.0f.\n\n", strings.Join(s, " "), m.reconnects)
	}
	r.deliveryMarkdown(p)
	if s := r.snapshot; s != nil {
		p("## Snapshot\n\n")
		p("%d rows (~200-byte jsonb payloads, table %d MB after VACUUM ANALYZE, written in %d-row INSERT ... SELECT transactions) sit in the outbox before the relay's first start, with no slot: the relay creates it with an exported snapshot, reads the table under it (snapshot.mode initial, batch_size 10000, physical order) and publishes every row before streaming. ",
			s.events, s.tableBytes>>20, o.memBatch)
		p("Timed from process start until Kafka's high watermarks sum to the row count. Target: >= %d rows/s; memory bounded by the in-flight cap, not the table.\n\n", targetSnapshotRate)
		p("| rows | time | rate | first record | peak RSS | relay CPU | CPU (cores): relay / postgres / harness / others |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		p("| %d | %s | %.0f rows/s | %s | %s | %s | %.2f / %.2f / %.2f / %.2f |\n\n", s.events, fmtDur(s.relay), s.rate(), fmtDur(s.firstRecord), mb(s.peak), fmtDur(s.relayCPU),
			s.cpu.relay, s.cpu.postgres, s.cpu.self, s.cpu.others)
	}
	p("## Noise\n\n")
	p("Everything (Postgres, the relay, the kfake broker, the writers and the consumer) shares the %d cores, ", r.cores)
	p("so each process's CPU competes with the others: rates and tail latencies move by tens of percent between runs, and more when the machine has other work (load average above). Compare runs on the same machine only.\n")
	if o.note != "" {
		p("\n%s\n", o.note)
	}
	if len(r.errs) > 0 {
		p("\n## Errors\n\n")
		for _, e := range r.errs {
			p("- %s\n", strings.ReplaceAll(e.Error(), "\n", " "))
		}
	}
	return b.String()
}

// writeResults writes md as <dir>/<date>-<host>.md, adding -2, -3... rather
// than replacing an earlier run of the same day.
func writeResults(dir string, m machine, md string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	base := time.Now().Format("2006-01-02") + "-" + sanitize(m.host)
	for i := 1; ; i++ {
		name := base + ".md"
		if i > 1 {
			name = fmt.Sprintf("%s-%d.md", base, i)
		}
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("writing results: %w", err)
		}
		if _, err := f.WriteString(md); err != nil {
			f.Close()
			return "", fmt.Errorf("writing %s: %w", path, err)
		}
		return path, f.Close()
	}
}

func sanitize(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

func (r *results) sidecarMarkdown(p func(string, ...any)) {
	o := r.opts
	p("## Everyday rates (sidecar cost)\n\n")
	p("Relay running and caught up; single-event transactions (synchronous_commit on) at %s events/s for %s each from %d connections on the latency section's pacer, and an idle phase of %s with nothing written. ",
		strings.Trim(strings.Join(strings.Fields(fmt.Sprint(o.sidecarRates)), ","), "[]"), o.sidecarDuration, o.latencyWriters, o.sidecarIdle)
	p("The broker (kfake) runs in a child process of its own, so its CPU is measured apart from the writers' and the consumer's. ")
	p("The relay's CPU is its threads' time on the CPU from /proc/<pid>/task/*/schedstat (nanoseconds), the others' user + system from /proc/<pid>/stat (10 ms ticks), over the phase; relay CPU per event is relay cores / achieved rate; switches are the relay's voluntary + involuntary context switches summed over its threads (each a thread that slept or was preempted: wake-ups seen from outside). ")
	p("Latency is COMMIT returned → an independent franz-go consumer received the record. Every phase runs %d times, the rates interleaved; the first table holds medians, the second every run. ", o.sidecarRepeat)
	p("Targets: relay CPU per event <= 150 µs at 100/s and <= 100 µs at 1k/s, idle <= %.3f cores, p99 <= 5 ms at 1k/s and <= 20 ms at 3k/s, RSS <= %s.\n\n", targetIdleCores, mb(targetSideRSS))
	rates, by := sidecarMedians(r.sidecar)
	p("| rate | relay CPU/event | relay cores | relay switches/event | walsender cores | broker cores | Postgres cores (all) | relay RSS (peak) | p50 | p99 | p99.9 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, rt := range rates {
		rs := by[rt]
		m := func(f func(sidecarRun) float64) float64 { return median(rs, f) }
		cores := m(func(s sidecarRun) float64 { return s.cpu.relay })
		rss := int64(m(func(s sidecarRun) float64 { return float64(s.rss) }))
		hwm := int64(m(func(s sidecarRun) float64 { return float64(s.hwm) }))
		wal := m(func(s sidecarRun) float64 { return s.cpu.walsender })
		brk := m(func(s sidecarRun) float64 { return s.broker })
		pg := m(func(s sidecarRun) float64 { return s.cpu.postgres })
		if rt == 0 {
			sw := m(func(s sidecarRun) float64 { return s.switches })
			p("| idle | | **%.4f** %s | %.1f/s | %.4f | %.4f | %.4f | %s (%s) | | | |\n", cores, verdict(cores <= targetIdleCores), sw, wal, brk, pg, mb(rss), mb(hwm))
			continue
		}
		per := time.Duration(m(func(s sidecarRun) float64 { return float64(s.perEvent()) }))
		sw := m(func(s sidecarRun) float64 { return s.switches / max(s.achieved, 1) })
		p50 := time.Duration(m(func(s sidecarRun) float64 { return float64(s.p50) }))
		p99 := time.Duration(m(func(s sidecarRun) float64 { return float64(s.p99) }))
		p999 := time.Duration(m(func(s sidecarRun) float64 { return float64(s.p999) }))
		perV, p99V := "", ""
		if t, ok := targetPerEvent[rt]; ok {
			perV = " " + verdict(per <= t)
		}
		if t, ok := targetSideP99[rt]; ok {
			p99V = " " + verdict(p99 <= t)
		}
		p("| %d/s | **%s**%s | %.3f | %.1f | %.3f | %.3f | %.3f | %s (%s) | %s | **%s**%s | %s |\n", rt, fmtDur(per), perV, cores, sw, wal, brk, pg, mb(rss), mb(hwm), fmtDur(p50), fmtDur(p99), p99V, fmtDur(p999))
	}
	p("\nEvery run (machine: all busy CPU of the box, in cores of %d; others: what no measured party accounts for, i.e. the rest of the machine's load):\n\n", r.cores)
	p("| rate | run | achieved | relay CPU/event | relay cores | switches/s | walsender | broker | relaybench | others | machine | p50 | p99 | max | lost |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range r.sidecar {
		rate, run := "idle", strconv.Itoa(s.rep)
		if s.rep == 0 {
			run = "profiled"
		}
		per, p50, p99, pmax, ach := "", "", "", "", ""
		if s.rate > 0 {
			rate = fmt.Sprintf("%d/s", s.rate)
			per, p50, p99, pmax = fmtDur(s.perEvent()), fmtDur(s.p50), fmtDur(s.p99), fmtDur(s.pmax)
			ach = fmt.Sprintf("%.0f/s", s.achieved)
		}
		// The broker is not a child of the postmaster nor relaybench itself:
		// take it out of "others".
		others := max(0, s.cpu.others-s.broker)
		p("| %s | %s | %s | %s | %.4f | %.0f | %.3f | %.3f | %.3f | %.3f | %.2f | %s | %s | %s | %d |\n", rate, run, ach, per, s.cpu.relay, s.switches, s.cpu.walsender, s.broker, s.cpu.self, others, s.cpu.machine, p50, p99, pmax, s.lost)
	}
	for _, s := range r.sidecar {
		if s.dropped > 0 {
			p("\nAt %d/s (run %d) the writers fell behind: %d events were not written.\n", s.rate, s.rep, s.dropped)
		}
	}
	if o.sidecarProfile != "" {
		p("\nThe profiled runs (relay CPU profile and a 1 s execution trace from /debug/pprof, in %s) are not counted in the medians: profiling costs the relay CPU of its own.\n", o.sidecarProfile)
	}
	p("\n")
}
