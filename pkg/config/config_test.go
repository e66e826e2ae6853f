package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaultsAndEnvOverrides(t *testing.T) {
	p := writeConfig(t, `
postgres:
  url: postgres://relay@db:5432/app
kafka:
  brokers: ["k1:9092"]
`)
	t.Setenv("RELAY_KAFKA_BROKERS", "a:9092,b:9092")
	t.Setenv("RELAY_PIPELINE_DRAIN_TIMEOUT", "5s")
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Kafka.Brokers, ","); got != "a:9092,b:9092" {
		t.Errorf("brokers = %s", got)
	}
	if cfg.Pipeline.DrainTimeout.String() != "5s" {
		t.Errorf("drain_timeout = %s", cfg.Pipeline.DrainTimeout)
	}
	if cfg.Postgres.Slot != "outbox_relay" || cfg.Postgres.Publication != "outbox_relay" {
		t.Errorf("slot/publication defaults not applied: %+v", cfg.Postgres)
	}
	if len(cfg.Outbox) != 1 || cfg.Outbox[0].Table != "public.outbox" {
		t.Fatalf("default outbox table not applied: %+v", cfg.Outbox)
	}
	tb := cfg.Outbox[0]
	if tb.Topic != "outbox.event.${routedByValue}" || tb.Columns.Key != "aggregateid" || tb.Columns.RouteBy != "aggregatetype" {
		t.Errorf("Debezium defaults not applied: %+v", tb)
	}
}

func TestLoadFromEnvOnly(t *testing.T) {
	t.Setenv("RELAY_POSTGRES_URL", "postgres://relay@db/app")
	t.Setenv("RELAY_KAFKA_BROKERS", "k:9092")
	t.Setenv("RELAY_OUTBOX_TABLES", "public.a, app.b")
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Outbox) != 2 || cfg.Outbox[1].Table != "app.b" || cfg.Outbox[1].Columns.ID != "id" {
		t.Fatalf("outbox from env: %+v", cfg.Outbox)
	}
}

func TestValidateReportsEveryProblemNamingTheKey(t *testing.T) {
	p := writeConfig(t, `
postgres:
  slot: "Bad-Slot"
kafka:
  brokers: ["nohostport"]
  compression: brotli
outbox:
  - table: public.outbox
    on_update: explode
    route_regex: "(unclosed"
pipeline:
  max_inflight_events: 0
log:
  level: loud
`)
	_, err := Load(p)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want ValidationError, got %v", err)
	}
	for _, key := range []string{"postgres.url", "postgres.slot", "kafka.brokers[0]", "kafka.compression",
		"outbox[0].on_update", "outbox[0].route_regex", "pipeline.max_inflight_events", "log.level"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	p := writeConfig(t, "postgres:\n  url: postgres://x@y/z\n  slots: typo\nkafka:\n  brokers: [\"k:1\"]\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "slots") {
		t.Fatalf("want error naming the unknown key, got %v", err)
	}
}

func TestSecretsFromFilesAndEnvExpansion(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGHOST_FOR_TEST", "db.internal")
	p := writeConfig(t, `
postgres:
  url: postgres://relay@${PGHOST_FOR_TEST}:5432/app
  password_file: `+pw+`
kafka:
  brokers: ["k:9092"]
outbox:
  - table: public.outbox
    topic: "events.${routedByValue}"
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Postgres.URL != "postgres://relay:s3cr3t@db.internal:5432/app" {
		t.Errorf("url = %s", cfg.Postgres.URL)
	}
	if cfg.Outbox[0].Topic != "events.${routedByValue}" {
		t.Errorf("topic placeholder was expanded: %s", cfg.Outbox[0].Topic)
	}
	if r := cfg.Postgres.URL.Redacted(); strings.Contains(r, "s3cr3t") {
		t.Errorf("RedactURL leaked the password: %s", r)
	}
}

func TestSplitTable(t *testing.T) {
	cases := []struct{ in, schema, table string }{
		{"outbox", "public", "outbox"},
		{"App.Outbox", "app", "outbox"},
		{`"App"."Out.box"`, "App", "Out.box"},
		{`public."evil; drop table x"`, "public", "evil; drop table x"},
		{`"a""b".c`, `a"b`, "c"},
	}
	for _, c := range cases {
		s, tb, err := SplitTable(c.in)
		if err != nil || s != c.schema || tb != c.table {
			t.Errorf("SplitTable(%q) = %q, %q, %v", c.in, s, tb, err)
		}
	}
	for _, bad := range []string{"a.b.c", `"unterminated`, "evil; drop", ""} {
		if _, _, err := SplitTable(bad); err == nil {
			t.Errorf("SplitTable(%q): want error", bad)
		}
	}
}

func TestSASLPasswordAndFileConflict(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RELAY_KAFKA_SASL_PASSWORD", "y")
	p := writeConfig(t, "postgres:\n  url: postgres://r@h/d\nkafka:\n  brokers: [\"k:1\"]\n  sasl:\n    mechanism: PLAIN\n    username: u\n    password_file: "+pw+"\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("want a conflict error, got %v", err)
	}
}

func TestSnapshotConfig(t *testing.T) {
	p := writeConfig(t, `
postgres: {url: postgres://relay@db:5432/app}
kafka: {brokers: ["k1:9092"]}
snapshot: {order_by: "seq"}
outbox:
  - table: public.a
  - table: public.b
    snapshot: {order_by: 'created_at, "Id"'}
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Snapshot.Mode != SnapshotInitial || cfg.Snapshot.BatchSize != 10000 {
		t.Errorf("snapshot defaults: %+v", cfg.Snapshot)
	}
	if got := cfg.SnapshotOrderBy(cfg.Outbox[0]); got != "seq" {
		t.Errorf("global order_by: %q", got)
	}
	cols, err := SplitColumns(cfg.SnapshotOrderBy(cfg.Outbox[1]))
	if err != nil || strings.Join(cols, "|") != "created_at|Id" {
		t.Errorf("per-table order_by: %q %v", cols, err)
	}
	t.Setenv("RELAY_SNAPSHOT_MODE", "never")
	if cfg, err = Load(p); err != nil || cfg.Snapshot.Mode != SnapshotNever {
		t.Fatalf("RELAY_SNAPSHOT_MODE: %v %+v", err, cfg)
	}

	bad := writeConfig(t, `
postgres: {url: postgres://relay@db:5432/app}
kafka: {brokers: ["k1:9092"]}
snapshot: {mode: sometimes, batch_size: 0, order_by: "a; drop table x"}
outbox:
  - table: public.a
    snapshot: {order_by: "x desc"}
`)
	t.Setenv("RELAY_SNAPSHOT_MODE", "")
	_, err = Load(bad)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want validation error, got %v", err)
	}
	for _, want := range []string{"snapshot.mode", "snapshot.batch_size", "snapshot.order_by", "outbox[0].snapshot.order_by"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}
