package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/sink"
	snap "github.com/relay-dev/relay/pkg/snapshot"
)

// cmdReplay re-publishes rows still in an outbox table through the table's
// mapping and the relay's producer. It never touches the slot, so it can run
// next to a streaming relay; what it publishes are duplicates by design.
func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to relay.yaml (optional when configured through RELAY_* env vars)")
	table := fs.String("table", "", "the outbox table to replay, as configured (schema.table)")
	where := fs.String("where", "", "SQL condition selecting the rows (default: every row)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *table == "" {
		return errors.New("replay: --table is required")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	t, err := findTable(cfg, *table)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)

	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := pgx.Connect(pctx, cfg.Postgres.URL.Reveal())
	cancel()
	if err != nil {
		return fmt.Errorf("connecting to postgres %s: %s", cfg.Postgres.URL.Redacted(), cfg.Postgres.URL.RedactError(err))
	}
	defer closeQuietly(conn)
	dec, err := decode.NewDecoder([]config.Table{t}, nil, log)
	if err != nil {
		return err
	}
	tr := checkpoint.New(cfg.Pipeline.MaxInflightEvents, cfg.Pipeline.MaxInflightBytes, 0)
	counts := &topicCounts{n: map[string]int64{}}
	prod, err := sink.NewProducer(cfg.Kafka, tr, counts, log)
	if err != nil {
		return err
	}
	at, err := snap.Begin(ctx, conn, "")
	if err != nil {
		return errors.New(cfg.Postgres.URL.RedactError(err))
	}

	events := make(chan *decode.Event, 1024)
	produced := make(chan error, 1)
	pctx, stopProducer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProducer()
	go func() { produced <- prod.Run(pctx, events) }()

	prog := &snap.Progress{}
	stopBar := progressBar(stderr, prog, counts)
	started := time.Now()
	rows, readErr := snap.Read(ctx, conn, snap.Options{
		Tables: []config.Table{t}, OrderBy: cfg.SnapshotOrderBy, Where: *where,
		BatchSize: cfg.Snapshot.BatchSize, Decoder: dec, Tracker: tr, Progress: prog, Log: log, At: at,
	}, events)
	close(events)
	var prodErr error
	select {
	case prodErr = <-produced:
	case <-ctx.Done():
		// Interrupted: give Kafka the drain timeout to ack what it holds.
		select {
		case prodErr = <-produced:
		case <-time.After(cfg.Pipeline.DrainTimeout):
			stopProducer()
			prodErr = <-produced
		}
	}
	stopBar()
	elapsed := time.Since(started)
	acked := counts.total()
	if err := errors.Join(readErr, prodErr); err != nil {
		fmt.Fprintf(stdout, "replay of %s stopped: %d of %d rows read were acknowledged by Kafka\n", t.Table, acked, rows)
		return errors.New(cfg.Postgres.URL.RedactError(err))
	}
	fmt.Fprintf(stdout, "replayed %d rows of %s in %s (%.0f rows/s)\n", acked, t.Table, elapsed.Round(time.Millisecond), float64(acked)/max(elapsed.Seconds(), 1e-9))
	for _, line := range counts.lines() {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
	return nil
}

// findTable finds the configured outbox table a --table argument names,
// comparing parsed names so that public.outbox, outbox and "outbox" agree.
func findTable(cfg *config.Config, name string) (config.Table, error) {
	schema, table, err := config.SplitTable(name)
	if err != nil {
		return config.Table{}, fmt.Errorf("replay: --table: %w", err)
	}
	var names []string
	for _, t := range cfg.Outbox {
		s, n, _ := config.SplitTable(t.Table)
		if s == schema && n == table {
			return t, nil
		}
		names = append(names, t.Table)
	}
	return config.Table{}, fmt.Errorf("replay: --table %s is not a configured outbox table (configured: %s)", name, strings.Join(names, ", "))
}

// topicCounts counts acknowledged events per topic.
type topicCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *topicCounts) Published(ev *decode.Event, _ time.Duration) {
	c.mu.Lock()
	c.n[ev.Topic]++
	c.mu.Unlock()
}

func (c *topicCounts) PublishError(string) {}

func (c *topicCounts) total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, v := range c.n {
		n += v
	}
	return n
}

func (c *topicCounts) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for topic, n := range c.n {
		out = append(out, fmt.Sprintf("%s: %d", topic, n))
	}
	sort.Strings(out)
	return out
}

// progressBar redraws one status line on w while it is a terminal; the
// returned function clears it.
func progressBar(w io.Writer, p *snap.Progress, acked *topicCounts) func() {
	f, ok := w.(*os.File)
	if !ok {
		return func() {}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-tick.C:
				read, total, ack := p.RowsDone.Load(), p.RowsTotal.Load(), acked.total()
				bar := ""
				if total > 0 {
					frac := min(float64(ack)/float64(total), 1)
					n := int(frac * 30)
					bar = fmt.Sprintf("[%s%s] %3.0f%% ", strings.Repeat("#", n), strings.Repeat(".", 30-n), frac*100)
				}
				fmt.Fprintf(f, "\r\033[K%s%d acked, %d read (estimate %d)", bar, ack, read, total)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
