// Command relay publishes transactional outbox rows from Postgres logical
// replication to Kafka, at least once and in commit order per key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/metrics"
	"github.com/relay-dev/relay/pkg/pipeline"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `relay publishes transactional outbox rows from Postgres to Kafka.

Usage:
  relay run --config FILE     run the relay (config keys can also come from RELAY_* env vars)
  relay check --config FILE   check the config, Postgres and Kafka; prints a checklist, exits non-zero on a problem
  relay status --config FILE  print the slot's lag in bytes, confirmed LSN, active pid and wal_status
  relay replay --config FILE --table T [--where SQL]
                              re-publish rows still in an outbox table (duplicates by design; the slot is untouched)
  relay dev                   run end to end on a throwaway Postgres and an embedded Kafka broker
  relay version               print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "dev":
		err = cmdDev(ctx, args[1:], stdout, stderr)
	case "check":
		return cmdCheck(ctx, args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout, stderr)
	case "replay":
		err = cmdReplay(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "relay", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "relay: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "relay: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	return 0
}

func newLogger(l config.Log, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(string(l.Level))
	if err != nil {
		level = zerolog.InfoLevel
	}
	if l.Format == config.LogConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// configFlag parses a command's --config flag and returns the file's path.
func configFlag(cmd string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to relay.yaml (optional when configured through RELAY_* env vars)")
	err := fs.Parse(args)
	return *path, err
}

// loadConfig parses --config and loads the configuration it names.
func loadConfig(cmd string, args []string, stderr io.Writer) (*config.Config, error) {
	path, err := configFlag(cmd, args, stderr)
	if err != nil {
		return nil, err
	}
	return config.Load(path)
}

// sidecarProcs is the relay's GOMAXPROCS unless the GOMAXPROCS variable
// says otherwise. The pipeline is fed by one walsender, a single process
// whose cost per event is of the order of the relay's, so a second P buys
// no throughput; what it costs is a thread woken (a futex call and a
// context switch) at nearly every hand-off between the relay's and
// sarama's goroutines, about a dozen per event. One P keeps those
// hand-offs on one thread: measured on 2 cores, 10-25% less CPU per event
// at 100 to 3000 events/s and no slower draining a backlog (bench/, the
// sidecar and drain sections).
const sidecarProcs = 1

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(sidecarProcs)
	}
	cfg, err := loadConfig("run", args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	return serve(ctx, cfg, log)
}

// serve runs the pipeline with its HTTP endpoints until ctx is cancelled.
func serve(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	m := metrics.New(version)
	var sources []string
	for _, t := range cfg.Outbox {
		sources = append(sources, t.Table)
	}
	for _, msg := range cfg.Messages {
		sources = append(sources, "message:"+msg.Prefix)
	}
	m.Sources(sources)
	p := pipeline.New(cfg, version, m, log)
	m.Watch(p)
	m.WatchSnapshot(p.SnapshotProgress())
	stopHTTP, err := startHTTP(cfg, p, m, log)
	if err != nil {
		return err
	}
	defer stopHTTP()
	log.Info().Str("version", version).Str("postgres", cfg.Postgres.URL.Redacted()).
		Strs("brokers", cfg.Kafka.Brokers).Str("slot", cfg.Postgres.Slot).Int("gomaxprocs", runtime.GOMAXPROCS(0)).Msg("relay starting")
	return p.Run(ctx)
}
