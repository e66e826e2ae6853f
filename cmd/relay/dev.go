//go:build relaydev

// The dev mode links a throwaway Postgres launcher and an embedded Kafka
// broker (kfake): test tooling that must not ship in the production binary,
// so it is compiled in only with -tags relaydev (./dev.sh does that).

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/pkg/config"
)

// cmdDev runs the relay end to end on a throwaway Postgres and an embedded
// broker: it writes a few demo events and shows them arriving in Kafka.
func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("events", 12, "demo events to write")
	keep := fs.Bool("keep", false, "keep running after the demo (until Ctrl-C) so you can write your own events")
	if err := fs.Parse(args); err != nil {
		return err
	}

	fmt.Fprintln(stdout, "starting a throwaway PostgreSQL (wal_level=logical) and an embedded Kafka broker...")
	pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Close()
	broker, err := devenv.StartKafka(devenv.KafkaOptions{Partitions: 3})
	if err != nil {
		return err
	}
	defer broker.Close()
	if err := pg.Exec(ctx, devenv.OutboxDDL("public.outbox")); err != nil {
		return fmt.Errorf("creating demo outbox table: %w", err)
	}

	cfg := config.Default()
	cfg.Postgres.URL = config.ConnString(pg.SuperURL())
	cfg.Kafka.Brokers = []string{broker.Addr()}
	cfg.Outbox = []config.Table{config.DefaultTable(config.DefaultOutboxTable)}
	cfg.Log.Format = config.LogConsole
	if err := cfg.Validate(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "postgres: %s\nkafka:    %s\n\n", cfg.Postgres.URL, broker.Addr())

	runCtx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	relayDone := make(chan error, 1)
	go func() { relayDone <- serve(runCtx, &cfg, newLogger(cfg.Log, stderr)) }()

	// Writing once the slot exists shows the events arriving through the
	// stream (rows written earlier would come from the initial snapshot).
	if err := waitSlot(ctx, pg.SuperURL(), cfg.Postgres.Slot, relayDone); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, pg.SuperURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	aggs := []string{"Order", "Customer", "Invoice"}
	for i := 0; i < *n; i++ {
		typ := aggs[i%len(aggs)]
		_, err := conn.Exec(ctx, `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4)`,
			typ, fmt.Sprintf("%s-%d", typ, i%4), typ+"Created", fmt.Sprintf(`{"n": %d}`, i))
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote %d events to public.outbox; waiting for them in Kafka...\n\n", *n)

	var topics []string
	for _, a := range aggs {
		topics = append(topics, "outbox.event."+a)
	}
	deadline := time.Now().Add(60 * time.Second)
	var recs []devenv.Record
	for {
		recs, err = devenv.ReadAll(ctx, broker.Addr(), topics...)
		if err == nil && len(recs) >= *n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d events reached Kafka within 60s (last error: %v)", len(recs), *n, err)
		}
		select {
		case err := <-relayDone:
			return fmt.Errorf("relay stopped: %v", err)
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Topic != recs[j].Topic {
			return recs[i].Topic < recs[j].Topic
		}
		if recs[i].Partition != recs[j].Partition {
			return recs[i].Partition < recs[j].Partition
		}
		return recs[i].Offset < recs[j].Offset
	})
	fmt.Fprintf(stdout, "%-24s %4s %6s  %-12s %-36s %s\n", "TOPIC", "PART", "OFFSET", "KEY", "ID (header)", "VALUE")
	for _, r := range recs {
		fmt.Fprintf(stdout, "%-24s %4d %6d  %-12s %-36s %s\n", r.Topic, r.Partition, r.Offset, r.Key, r.Headers["id"], r.Value)
	}
	fmt.Fprintf(stdout, "\nall %d events arrived.\n", len(recs))
	if *keep {
		fmt.Fprintln(stdout, "relay still running; insert into public.outbox via the postgres URL above; Ctrl-C to stop.")
		select {
		case <-ctx.Done():
		case err := <-relayDone:
			return err
		}
	}
	stopRelay()
	return <-relayDone
}

func waitSlot(ctx context.Context, url, slot string, relayDone <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			var active bool
			err = conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
			conn.Close(context.Background())
			if err == nil && active {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("relay did not start streaming within 60s")
		}
		select {
		case err := <-relayDone:
			return fmt.Errorf("relay stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
