package devenv_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
)

func queryString(ctx context.Context, url, sql string) (string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

func TestPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{
		Settings: map[string]string{"max_slot_wal_keep_size": "64MB", "application_name": "it's quoted"},
		HBA:      []string{"host all blocked 127.0.0.1/32 reject"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	for sql, want := range map[string]string{
		"SHOW wal_level":              "logical",
		"SHOW max_slot_wal_keep_size": "64MB",
		"SHOW application_name":       "it's quoted",
		"SHOW listen_addresses":       "127.0.0.1",
	} {
		got, err := queryString(ctx, pg.SuperURL(), sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", sql, got, want)
		}
	}
	// The extra HBA line must come before the default trust lines.
	if _, err := queryString(ctx, pg.URL("blocked", "postgres"), "SELECT 'x'"); err == nil || !strings.Contains(err.Error(), "rejects connection") {
		t.Errorf("connecting as blocked: got %v, want a pg_hba.conf rejection", err)
	}
	if err := pg.Exec(ctx, "SELECT pg_create_logical_replication_slot('t', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}

	port := pg.Port()
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if pg.Port() != port {
		t.Errorf("port changed across restart: %d -> %d", port, pg.Port())
	}
	slot, err := queryString(ctx, pg.SuperURL(), "SELECT slot_name::text FROM pg_replication_slots")
	if err != nil || slot != "t" {
		t.Fatalf("after restart: slot = %q, %v", slot, err)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := pg.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("Exec succeeded on a stopped server")
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after Start: %v", err)
	}

	dir := pg.DataDir()
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir still there after Close: %v", err)
	}
	if err := pg.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("Exec succeeded after Close")
	}
}

// Close after Stop must not fail, and the helper must clean up.
func TestPostgresCloseAfterStop(t *testing.T) {
	pg := devenvtest.Postgres(t, devenv.PostgresOptions{})
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresStartFailureShowsLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Settings: map[string]string{"no_such_setting": "1"}})
	if err == nil {
		t.Fatal("started with an unknown setting")
	}
	if !strings.Contains(err.Error(), "no_such_setting") {
		t.Errorf("error does not quote the server log: %v", err)
	}
}

// watchdogChildEnv makes TestWatchdogChild start a server and wait to be
// killed.
const watchdogChildEnv = "DEVENV_WATCHDOG_CHILD"

func TestWatchdogChild(t *testing.T) {
	if os.Getenv(watchdogChildEnv) == "" {
		t.Skip("helper for TestPostgresWatchdog")
	}
	pg, err := devenv.StartPostgres(context.Background(), devenv.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("DATADIR %s %d\n", pg.DataDir(), pg.Port())
	_, _ = io.ReadAll(os.Stdin) // until the parent kills us
}

// A process killed without calling Close must not leave its server behind.
func TestPostgresWatchdog(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdogChild$", "-test.v")
	cmd.Env = append(os.Environ(), watchdogChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dataDir string
	var port int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "DATADIR %s %d", &dataDir, &port); err == nil {
			break
		}
	}
	if dataDir == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child did not start a server")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed: the exit status says so

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, statErr := os.Stat(filepath.Dir(dataDir))
		conn, dialErr := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if dialErr == nil {
			conn.Close()
		}
		if errors.Is(statErr, os.ErrNotExist) && dialErr != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the owner died: dir stat err %v, dial err %v", statErr, dialErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func produce(t *testing.T, k *devenv.Kafka, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := devenv.StartKafka(devenv.KafkaOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if !strings.HasPrefix(k.Addr(), "127.0.0.1:") {
		t.Errorf("Addr = %q", k.Addr())
	}

	var sent []*kgo.Record
	for i := range 3 {
		sent = append(sent, &kgo.Record{
			Topic:   "events",
			Key:     fmt.Appendf(nil, "key-%d", i),
			Value:   fmt.Appendf(nil, "value-%d", i),
			Headers: []kgo.RecordHeader{{Key: "id", Value: fmt.Appendf(nil, "%d", i)}},
		})
	}
	// This producer lives across the restart, as the relay's does.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, sent...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		recs, err := devenv.ReadAll(ctx, k.Addr(), "events", "missing")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if len(recs) != 3 {
			t.Fatalf("%s: read %d records, want 3: %+v", when, len(recs), recs)
		}
		seen := map[string]bool{}
		for _, r := range recs {
			if r.Topic != "events" || r.Partition < 0 || r.Partition >= 3 {
				t.Errorf("%s: record in %s/%d", when, r.Topic, r.Partition)
			}
			if want := "value-" + r.Headers["id"]; string(r.Value) != want {
				t.Errorf("%s: value %q, want %q", when, r.Value, want)
			}
			seen[string(r.Key)] = true
		}
		if len(seen) != 3 {
			t.Errorf("%s: keys %v", when, seen)
		}
		n, err := devenv.CountRecords(ctx, k.Addr(), "events", "missing")
		if err != nil || n != 3 {
			t.Errorf("%s: CountRecords = %d, %v; want 3", when, n, err)
		}
		topics, err := devenv.Topics(ctx, k.Addr())
		if err != nil || !slices.Equal(topics, []string{"events"}) {
			t.Errorf("%s: Topics = %v, %v", when, topics, err)
		}
	}
	check("before restart")

	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	check("after restart")

	// The restarted broker takes new writes from new and old clients on
	// the same address, and keeps the idempotent producer's state.
	produce(t, k, &kgo.Record{Topic: "events", Value: []byte("more")})
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "events", Key: []byte("key-0"), Value: []byte("again")}).FirstErr(); err != nil {
		t.Fatalf("producing after restart with the old client: %v", err)
	}
	if n, err := devenv.CountRecords(ctx, k.Addr(), "events"); err != nil || n != 5 {
		t.Errorf("after restart and produce: CountRecords = %d, %v; want 5", n, err)
	}

	k.Close()
	k.Close()
	if err := k.Restart(); err == nil {
		t.Error("Restart after Close succeeded")
	}
}

func TestReadAllEmptyAndMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devenvtest.Kafka(t, devenv.KafkaOptions{Partitions: 2})
	recs, err := devenv.ReadAll(ctx, k.Addr(), "nope")
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadAll of a missing topic = %v, %v", recs, err)
	}
	if err := k.Cluster().CreateTopic("empty", 2, nil); err != nil {
		t.Fatal(err)
	}
	recs, err = devenv.ReadAll(ctx, k.Addr(), "empty")
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadAll of an empty topic = %v, %v", recs, err)
	}
	// Looking must not create topics.
	topics, err := devenv.Topics(ctx, k.Addr())
	if err != nil || !slices.Equal(topics, []string{"empty"}) {
		t.Fatalf("Topics = %v, %v", topics, err)
	}
}

// A committed transaction ends with a control record that consumers never
// see; ReadAll must still know it reached the end.
func TestReadAllStopsAfterTransactionMarker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devenvtest.Kafka(t, devenv.KafkaOptions{Partitions: 1})
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.AllowAutoTopicCreation(), kgo.TransactionalID("devenv-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "txn", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if n, err := devenv.CountRecords(ctx, k.Addr(), "txn"); err != nil || n != 2 {
		t.Fatalf("CountRecords = %d, %v; want 2 (record and marker)", n, err)
	}
	recs, err := devenv.ReadAll(ctx, k.Addr(), "txn")
	if err != nil || len(recs) != 1 || string(recs[0].Value) != "v" {
		t.Fatalf("ReadAll = %+v, %v", recs, err)
	}
}

// Every major version the relay supports starts from its own binaries.
func TestPostgresVersions(t *testing.T) {
	for _, v := range []int{15, 16, 17, 18} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			devenvtest.RequirePostgres(t, v)
			pg := devenvtest.Postgres(t, devenv.PostgresOptions{Version: v})
			if pg.Version() != v {
				t.Errorf("Version() = %d, want %d", pg.Version(), v)
			}
			got, err := queryString(context.Background(), pg.SuperURL(), "SELECT current_setting('server_version_num')")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, fmt.Sprint(v)) {
				t.Errorf("server_version_num = %s, want %d", got, v)
			}
			// The npm builds must carry pgoutput.
			if err := pg.Exec(context.Background(), "SELECT pg_create_logical_replication_slot('t', 'pgoutput')"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A cold copy of a stopped primary streams from it as a standby and can be
// promoted.
func TestPostgresStandby(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	primary := devenvtest.Postgres(t, devenv.PostgresOptions{})
	if err := primary.Exec(ctx, "CREATE TABLE t (n int); INSERT INTO t VALUES (1); SELECT pg_create_physical_replication_slot('standby')"); err != nil {
		t.Fatal(err)
	}
	if err := primary.Stop(); err != nil {
		t.Fatal(err)
	}
	standby := devenvtest.Postgres(t, devenv.PostgresOptions{
		DataFrom: primary.DataDir(),
		Standby:  true,
		Settings: map[string]string{
			"primary_conninfo":            fmt.Sprintf("host=127.0.0.1 port=%d user=postgres", primary.Port()),
			"primary_slot_name":           "standby",
			"wal_retrieve_retry_interval": "100ms",
		},
	})
	if standby.Port() == primary.Port() {
		t.Fatal("standby got the primary's port")
	}
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if got, _ := queryString(ctx, standby.SuperURL(), "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("standby: pg_is_in_recovery = %q", got)
	}
	for {
		got, err := queryString(ctx, standby.SuperURL(), "SELECT count(*)::text FROM t")
		if err == nil && got == "2" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("standby never received the second row: %q, %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := primary.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := standby.Exec(ctx, "INSERT INTO t VALUES (3)"); err != nil {
		t.Fatalf("writing on the promoted standby: %v", err)
	}
}
