package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc CPU times; it is 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuSnap is cumulative CPU seconds of the parties to a measurement, so a
// tail latency can be read against who had the cores: on a shared 2-core
// machine the answer is often "someone else".
type cpuSnap struct {
	at                      time.Time
	relay, self             float64
	postgres                map[int]float64 // by pid: backends come and go
	walsenders              map[int]bool
	machineBusy, machineAll float64
}

// cpuUse is a cpuSnap difference, as shares of one core.
type cpuUse struct {
	relay, postgres, walsender, self, others, machine float64
}

func takeCPU(relayPid, postmasterPid int) cpuSnap {
	s := cpuSnap{at: time.Now(), postgres: map[int]float64{}, walsenders: map[int]bool{}}
	s.relay = threadsCPU(relayPid)
	s.self, _ = procCPU(os.Getpid())
	if postmasterPid > 0 {
		// The postmaster's children are the cluster: backends, the
		// walsender, background workers.
		s.postgres[postmasterPid], _ = procCPU(postmasterPid)
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			pid, err := strconv.Atoi(filepath.Base(d))
			if err != nil {
				continue
			}
			if f, err := procStatFields(pid); err == nil && len(f) > 14 && f[1] == strconv.Itoa(postmasterPid) {
				s.postgres[pid] = ticks(f[11]) + ticks(f[12])
				// Backends retitle themselves; a walsender is what
				// decodes for the relay (or pg_recvlogical).
				if cmd, err := os.ReadFile(filepath.Join(d, "cmdline")); err == nil && strings.Contains(string(cmd), "walsender") {
					s.walsenders[pid] = true
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) > 5 && f[0] == "cpu" {
			for i, v := range f[1:] {
				if i >= 8 { // guest times are already counted in user
					break
				}
				t := ticks(v)
				s.machineAll += t
				if i != 3 && i != 4 { // idle, iowait
					s.machineBusy += t
				}
			}
		}
	}
	return s
}

func (a cpuSnap) to(b cpuSnap) cpuUse {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return cpuUse{}
	}
	u := cpuUse{
		relay:   (b.relay - a.relay) / wall,
		self:    (b.self - a.self) / wall,
		machine: (b.machineBusy - a.machineBusy) / wall,
	}
	// A process that exits in between takes its CPU with it, and one
	// that starts counts from zero: the Postgres figure is a floor, and
	// what it misses shows up as "others".
	for pid, end := range b.postgres {
		d := max(0, end-a.postgres[pid]) / wall
		u.postgres += d
		if b.walsenders[pid] {
			u.walsender += d
		}
	}
	u.others = max(0, u.machine-u.relay-u.postgres-u.self)
	return u
}

// threadsCPU is a process's CPU seconds summed over its threads' schedstat
// (nanoseconds on the CPU), or its /proc/<pid>/stat user+system when that is
// not available. The 10 ms ticks of stat cannot tell an idle relay's 0.0003
// cores from 0.0007 over a 30 s phase; schedstat can. A thread that exited
// takes its time with it, which a Go process's threads rarely do.
func threadsCPU(pid int) float64 {
	files, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	var ns float64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			ns += v
		}
	}
	if ns == 0 {
		t, _ := procCPU(pid)
		return t
	}
	return ns / 1e9
}

// procCPU is a process's user+system CPU seconds.
func procCPU(pid int) (float64, error) {
	f, err := procStatFields(pid)
	if err != nil || len(f) < 13 {
		return 0, err
	}
	return ticks(f[11]) + ticks(f[12]), nil
}

// procStatFields returns /proc/<pid>/stat's fields after the command name,
// which may hold spaces: f[0] is the state, f[1] the parent pid, f[11] and
// f[12] utime and stime.
func procStatFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:]), nil
}

func ticks(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v / clockTicks
}

// postmasterPid reads the first line of postmaster.pid.
func postmasterPid(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}
