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

// configs/relay.yaml is the reference users read for "every key with its
// default": loading it must give Default, apart from the values it sets on
// purpose (where to connect, the table, a listener), so a changed default
// cannot leave the file stating the old one.
func TestShippedConfigStatesTheDefaults(t *testing.T) {
	cfg, err := Load("../../configs/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Postgres.URL = cfg.Postgres.URL
	want.Kafka.Brokers = cfg.Kafka.Brokers
	want.Outbox = []Table{DefaultTable("public.outbox")}
	want.HTTP.Listen = "127.0.0.1:9090"
	// Default leaves the policy empty so that an explicit choice can be
	// checked against the deprecated kafka.oversized; the file states the
	// value in effect.
	want.Kafka.OnUnpublishable = UnpublishableStop
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("configs/relay.yaml loads as\n%+v\nDefault() is\n%+v", *cfg, want)
	}
}
