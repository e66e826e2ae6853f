package config

import (
	"strings"
	"testing"
)

func TestSlotFailoverDefaultAndEnv(t *testing.T) {
	t.Setenv("RELAY_POSTGRES_URL", "postgres://relay@db/app")
	t.Setenv("RELAY_KAFKA_BROKERS", "k:9092")
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Postgres.SlotFailover {
		t.Error("postgres.slot_failover defaults to true")
	}
	t.Setenv("RELAY_POSTGRES_SLOT_FAILOVER", "true")
	if cfg, err = Load(""); err != nil {
		t.Fatal(err)
	}
	if !cfg.Postgres.SlotFailover {
		t.Error("RELAY_POSTGRES_SLOT_FAILOVER=true not applied")
	}
	t.Setenv("RELAY_POSTGRES_SLOT_FAILOVER", "maybe")
	if _, err := Load(""); err == nil {
		t.Error("RELAY_POSTGRES_SLOT_FAILOVER=maybe accepted")
	}
}

// Several hosts need target_session_attrs that picks the primary, or the
// relay could settle on a standby.
func TestMultiHostURL(t *testing.T) {
	for url, want := range map[string]string{
		"postgres://relay@a,b/app?target_session_attrs=read-write":        "",
		"postgres://relay@a:5432,b:5433/app?target_session_attrs=primary": "",
		"host=a,b port=5432,5433 dbname=app target_session_attrs=primary": "",
		"postgres://relay@a/app":                                            "",
		"postgres://relay@a/app?sslmode=prefer":                             "",
		"postgres://relay@a,b/app":                                          "lists 2 hosts without target_session_attrs",
		"postgres://relay@a:1,a:2/app?sslmode=disable":                      "lists 2 hosts",
		"postgres://relay@a,b/app?target_session_attrs=standby":             "must be read-write or primary",
		"postgres://relay@a/app?target_session_attrs=prefer-standby":        "must be read-write or primary",
		"postgres://relay@a,b/app?target_session_attrs=any&sslmode=disable": "lists 2 hosts",
	} {
		t.Run(url, func(t *testing.T) {
			t.Setenv("RELAY_POSTGRES_URL", url)
			t.Setenv("RELAY_KAFKA_BROKERS", "k:9092")
			_, err := Load("")
			switch {
			case want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "postgres.url")):
				t.Errorf("got %v, want an error on postgres.url saying %q", err, want)
			}
		})
	}
}
