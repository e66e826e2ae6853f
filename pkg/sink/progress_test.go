package sink

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
)

// TestProgressStore writes records for two slots and two systems, with
// enough unrelated records after the wanted one that Load must widen its
// window, and reads the newest of each back.
func TestProgressStore(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := config.Default().Kafka
	k.Brokers = c.ListenAddrs()
	if _, err := OpenProgress(k, false); err == nil {
		t.Fatal("opened a missing topic without create")
	}
	s, err := OpenProgress(k, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	save := func(slot, sys string, lsn uint64) {
		t.Helper()
		r := checkpoint.Record{Slot: slot, SystemID: sys, Timeline: 1, LSN: pglogrepl.LSN(lsn), Time: time.Now(), Version: "test"}
		if err := s.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := s.Load(ctx, "a", "1"); err != nil || l.Found {
		t.Fatalf("empty topic: %+v %v", l, err)
	}
	save("a", "1", 10)
	save("a", "1", 20)
	save("a", "2", 99)
	for i := 0; i < 300; i++ {
		save("b", "1", uint64(1000+i))
	}
	l, err := s.Load(ctx, "a", "1")
	if err != nil || !l.Found || l.Record.LSN != 20 {
		t.Fatalf("load a@1: %+v %v, want 0/14", l.Record, err)
	}
	if len(l.Others) != 1 || l.Others[0].SystemID != "2" {
		t.Fatalf("others %+v, want a@2", l.Others)
	}
	if l, err := s.Load(ctx, "b", "1"); err != nil || l.Record.LSN != 1299 {
		t.Fatalf("load b@1: %+v %v", l.Record, err)
	}
	if p, err := s.CleanupPolicy(); err != nil || p != "compact" {
		t.Fatalf("cleanup.policy %q %v", p, err)
	}
}
