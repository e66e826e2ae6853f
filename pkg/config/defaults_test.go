package config

import (
	"reflect"
	"strings"
	"testing"
)

// Every key left unset takes its value from Default, DefaultTable or
// DefaultMessage, and from nowhere else.
func TestLoadTakesDefaultsFromOnePlace(t *testing.T) {
	p := writeConfig(t, `
postgres:
  url: postgres://relay@db/app
kafka:
  brokers: ["k:9092"]
outbox:
  - table: public.a
  - table: public.b
    topic: ""
    columns: {type: ""}
    headers: {tenant: ""}
messages:
  - prefix: audit
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Postgres.URL = "postgres://relay@db/app"
	want.Kafka.Brokers = []string{"k:9092"}
	a, b := DefaultTable("public.a"), DefaultTable("public.b")
	b.Headers = map[string]string{"tenant": ""}
	want.Outbox = []Table{a, b}
	want.Messages = []Message{DefaultMessage("audit")}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("loaded\n%+v\nwant\n%+v", *cfg, want)
	}
}

// Every scalar key can be overridden as RELAY_<SECTION>_<KEY>, including
// booleans whose default is true and keys nested two deep.
func TestEnvOverridesEveryScalarKey(t *testing.T) {
	t.Setenv("RELAY_POSTGRES_URL", "postgres://relay@db/app")
	t.Setenv("RELAY_KAFKA_BROKERS", "k:9092")
	t.Setenv("RELAY_POSTGRES_CREATE_SLOT", "false")
	t.Setenv("RELAY_KAFKA_TLS_SERVER_NAME", "kafka.internal")
	t.Setenv("RELAY_KAFKA_TLS_ENABLED", "true")
	t.Setenv("RELAY_HTTP_PPROF", "true")
	t.Setenv("RELAY_LOG_LEVEL", "debug")
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Postgres.CreateSlot || !cfg.Postgres.CreatePublication || cfg.Kafka.TLS.ServerName != "kafka.internal" ||
		!cfg.Kafka.TLS.Enabled || !cfg.HTTP.Pprof || cfg.Log.Level != "debug" || cfg.Log.Format != "json" {
		t.Errorf("env overrides not applied: %+v", cfg)
	}
}

func TestUnknownKeyInAListEntryNamesTheEntry(t *testing.T) {
	p := writeConfig(t, "postgres:\n  url: postgres://x@y/z\nkafka:\n  brokers: [\"k:1\"]\noutbox:\n  - table: public.a\n  - table: public.b\n    colums: {id: x}\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "outbox[1]") || !strings.Contains(err.Error(), "colums") {
		t.Fatalf("want an error naming outbox[1] and colums, got %v", err)
	}
}
