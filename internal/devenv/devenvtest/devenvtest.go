// Package devenvtest adapts devenv to tests: a server that fails to start
// fails the test, and every server is closed when the test ends. It lives
// apart from devenv so the relay binary does not link the testing package.
package devenvtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/relay-dev/relay/internal/devenv"
)

// startTimeout bounds a server start; initdb plus startup takes a few
// seconds, much more on a loaded machine.
const startTimeout = 2 * time.Minute

// logTailBytes is how much of the server log a failed test prints.
const logTailBytes = 16 << 10

// Postgres starts a throwaway PostgreSQL server closed at the end of the
// test. Unless opts.Log is set, the end of the server log is printed if the
// test failed, since Close removes the log file with the data.
func Postgres(t testing.TB, opts devenv.PostgresOptions) *devenv.Postgres {
	t.Helper()
	var logs *devenv.Tail
	if opts.Log == nil {
		logs = &devenv.Tail{Max: logTailBytes}
		opts.Log = logs
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	pg, err := devenv.StartPostgres(ctx, opts)
	if err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && logs != nil {
			t.Logf("PostgreSQL (port %d) log tail:\n%s", pg.Port(), logs)
		}
		if err := pg.Close(); err != nil {
			t.Errorf("closing PostgreSQL: %v", err)
		}
	})
	return pg
}

// requireEnv, when set (as .ci/run does), turns a missing PostgreSQL
// version from a skip into a failure, so CI cannot pass by skipping.
const requireEnv = "RELAY_TEST_REQUIRE_PG_VERSIONS"

// RequirePostgres skips the test when the server binaries of a major
// version are not installed (.ci/ensure-postgres-versions installs them),
// or fails it under requireEnv.
func RequirePostgres(t testing.TB, version int) {
	t.Helper()
	if _, err := devenv.FindPostgres(version); err != nil {
		if os.Getenv(requireEnv) != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// Kafka starts an embedded Kafka broker closed at the end of the test.
func Kafka(t testing.TB, opts devenv.KafkaOptions) *devenv.Kafka {
	t.Helper()
	k, err := devenv.StartKafka(opts)
	if err != nil {
		t.Fatalf("starting Kafka: %v", err)
	}
	t.Cleanup(k.Close)
	return k
}
