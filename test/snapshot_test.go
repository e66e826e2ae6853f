package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relay-dev/relay/internal/devenv"
)

// insertMany commits n events in transactions of batch events, keys spread
// over keys per aggregate type A and B (no key has both types).
func insertMany(t *testing.T, e *env, p *producer, n, batch, keys int) {
	t.Helper()
	conn := e.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		base := done
		err := p.insert(ctx, conn, "public.outbox", k, func(i int) (string, string) {
			j := base + i
			typ := []string{"A", "B"}[j%2]
			return typ, fmt.Sprintf("%s%d", typ, (j/2)%keys)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// relay replay republishes a --where subset through the table's mapping and
// leaves the slot where it was.
func TestReplay(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg := e.config("")
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	insertMany(t, e, p, 400, 50, 20)
	e.waitDelivered(400, 60*time.Second, "outbox.event.A", "outbox.event.B")
	if code := r.stop(30 * time.Second); code != 0 {
		t.Fatalf("relay exit %d", code)
	}
	before, _ := e.slotLSNs("outbox_relay")

	out, code := runRelay(t, cfg, "replay", "--table", "outbox", "--where", "aggregatetype = 'A'")
	if code != 0 {
		t.Fatalf("relay replay exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "replayed 200 rows of public.outbox") || !strings.Contains(out, "outbox.event.A: 200") {
		t.Errorf("replay summary:\n%s", out)
	}
	after, _ := e.slotLSNs("outbox_relay")
	if after != before {
		t.Errorf("replay moved the slot's confirmed_flush_lsn from %d to %d", before, after)
	}

	recs := e.readAll("outbox.event.A", "outbox.event.B")
	count := map[string]int{}
	for _, rec := range recs {
		count[rec.Headers["id"]]++
	}
	for _, ev := range p.committed() {
		want := 1
		if ev.Type == "A" {
			want = 2
		}
		if count[ev.ID] != want {
			t.Fatalf("event %+v in Kafka %d times, want %d", ev, count[ev.ID], want)
		}
	}
	// The replayed copies, read alone, are a complete history in per-key order.
	var replayed []event
	for _, ev := range p.committed() {
		if ev.Type == "A" {
			replayed = append(replayed, ev)
		}
	}
	seen := map[string]int{}
	var second []devenv.Record
	for _, rec := range recs {
		if seen[rec.Headers["id"]]++; seen[rec.Headers["id"]] == 2 {
			second = append(second, rec)
		}
	}
	if v := check(replayed, second, e.parts, defaultTopic); v.lost+v.duplicates+v.orderViolations+v.misplaced > 0 {
		t.Errorf("replayed copies: %s %v", v, v.problems)
	}

	out, code = runRelay(t, cfg, "replay", "--table", "public.nope")
	if code == 0 || !strings.Contains(out, "not a configured outbox table") {
		t.Errorf("replay of an unconfigured table: exit %d\n%s", code, out)
	}
}
