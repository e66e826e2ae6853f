package main

// These check the harness's arithmetic and parsing only. The benchmark's
// figures are never asserted on: they depend on the machine.

import (
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 100; i++ {
		v = append(v, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 100 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(v, c.q); got != c.want {
			t.Errorf("percentile(1..100ms, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := percentile(nil, 0.99); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("percentile of one value = %v, want it", got)
	}
}

func TestParseStatusField(t *testing.T) {
	status := "Name:\trelay\nVmPeak:\t 1234 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n"
	if got, err := parseStatusField(status, "VmHWM"); err != nil || got != 40<<20 {
		t.Errorf("VmHWM = %d, %v; want %d", got, err, 40<<20)
	}
	if got, err := parseStatusField(status, "VmRSS"); err != nil || got != 30<<20 {
		t.Errorf("VmRSS = %d, %v; want %d", got, err, 30<<20)
	}
	if _, err := parseStatusField(status, "VmSwap"); err == nil {
		t.Error("a missing field must be an error, not 0")
	}
}

const scrape = `# HELP relay_reconnects_total Pipeline restarts.
# TYPE relay_reconnects_total counter
relay_reconnects_total{component="kafka"} 3
relay_reconnects_total{component="postgres"} 1
relay_reconnects_totally_different 100
relay_inflight_events 42
relay_publish_latency_seconds_bucket{le="0.001"} 10
relay_publish_latency_seconds_bucket{le="0.01"} 95
relay_publish_latency_seconds_bucket{le="0.1"} 99
relay_publish_latency_seconds_bucket{le="+Inf"} 100
relay_publish_latency_seconds_sum 1.5
relay_publish_latency_seconds_count 100
`

func TestSumMetric(t *testing.T) {
	for name, want := range map[string]float64{
		"relay_reconnects_total": 4, // labelled samples add up; a longer name sharing the prefix does not count
		"relay_inflight_events":  42,
		"relay_absent":           0,
	} {
		got, err := sumMetric(strings.NewReader(scrape), name)
		if err != nil || got != want {
			t.Errorf("sumMetric(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
}

func TestBucketQuantile(t *testing.T) {
	after, err := parseBuckets(strings.NewReader(scrape), "relay_publish_latency_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 4 || after[math.Inf(1)] != 100 {
		t.Fatalf("parsed %v, want 4 buckets with +Inf = 100", after)
	}
	// Between the readings: none under 1ms, 85 under 10ms, 89 under
	// 100ms, 90 in all.
	before := map[float64]float64{0.001: 10, 0.01: 10, 0.1: 10, math.Inf(1): 10}
	if b, n := bucketQuantile(before, after, 0.5); b != 0.01 || n != 90 {
		t.Errorf("p50 bucket = %v of %v events, want 0.01 of 90", b, n)
	}
	if b, _ := bucketQuantile(before, after, 0.98); b != 0.1 {
		t.Errorf("p98 bucket = %v, want 0.1", b)
	}
	// 89 of 90 is under 99%: the p99 is past the last finite bound.
	if b, _ := bucketQuantile(before, after, 0.99); !math.IsInf(b, 1) {
		t.Errorf("p99 bucket = %v, want +Inf", b)
	}
	if b, n := bucketQuantile(after, after, 0.99); b != 0 || n != 0 {
		t.Errorf("no observations gave %v, %v; want 0, 0", b, n)
	}
}

func TestUUIDFormat(t *testing.T) {
	cw := &connWriter{ids: rand.New(rand.NewPCG(1, 2))}
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := cw.uuid()
		if !re.MatchString(id) {
			t.Fatalf("%q is not a version 4 UUID in Postgres's text form", id)
		}
		if seen[id] {
			t.Fatalf("%q repeated", id)
		}
		seen[id] = true
	}
}

func TestEventGen(t *testing.T) {
	g := newEventGen(1)
	keyType := map[string]string{}
	for i := range 5000 {
		e := g.next(i * 1000003)
		if n := len(e.payload); n < 180 || n > 220 {
			t.Fatalf("payload of %d bytes, want about 200: %s", n, e.payload)
		}
		if at, ok := keyType[e.aggID]; ok && at != e.aggType {
			t.Fatalf("key %s has types %s and %s; a key must stay with its aggregate type", e.aggID, at, e.aggType)
		}
		keyType[e.aggID] = e.aggType
		if e.typ != e.aggType+"Created" {
			t.Fatalf("type %q for aggregate type %q", e.typ, e.aggType)
		}
	}
	if len(keyType) > numKeys {
		t.Fatalf("%d keys, want at most %d", len(keyType), numKeys)
	}
}

func TestMinMax(t *testing.T) {
	if lo, hi := minMax([]int64{5, 2, 9, 3}); lo != 2 || hi != 9 {
		t.Errorf("minMax = %d, %d; want 2, 9", lo, hi)
	}
	if lo, hi := minMax(nil); lo != 0 || hi != 0 {
		t.Errorf("minMax(nil) = %d, %d", lo, hi)
	}
}

func TestFlat(t *testing.T) {
	ramp := &memoryRun{samples: []int64{10 << 20, 60 << 20, 80 << 20, 81 << 20, 82 << 20, 80 << 20}}
	if ok, moved := ramp.flat(); !ok || moved != 2<<20 {
		t.Errorf("ramp then plateau: flat = %v (moved %d), want flat, moved 2 MB", ok, moved)
	}
	growing := &memoryRun{samples: []int64{10 << 20, 20 << 20, 30 << 20, 40 << 20, 50 << 20, 60 << 20}}
	if ok, _ := growing.flat(); ok {
		t.Error("steady growth counted as flat")
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-only", "drain,bogus"},
		{"-n", "150"},
		{"-latency-rates", "1000,fast"},
		{"-stall", "10ms"},
		{"extra"},
	} {
		if _, err := parseFlags(append([]string{"-relay", "helpers_test.go"}, args...)); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	o, err := parseFlags([]string{"-relay", "helpers_test.go", "-only", "memory,drain", "-n", "1000"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.runs("memory") || !o.runs("drain") || o.runs("latency") {
		t.Errorf("-only memory,drain selected %v", o.only)
	}
	if strings.Join(o.args, " ") != "-n=1000 -only=memory,drain" {
		t.Errorf("recorded args %q", o.args)
	}
}
