// Package devenvtest adapts devenv to tests: a server that fails to start
// fails the test, and every server is closed when the test ends. It lives
// apart from devenv so the relay binary does not link the testing package.
package devenvtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/relay-dev/relay/pkg/devenv"
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
	var logs *tail
	if opts.Log == nil {
		logs = &tail{}
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

// tail keeps the end of the server log in memory. It never blocks the
// server for long and outlives the test safely, unlike t.Log.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (l *tail) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	if over := len(l.buf) - logTailBytes; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
	}
	return len(b), nil
}

func (l *tail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}
