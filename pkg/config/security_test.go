package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const saslYAML = `
postgres:
  url: postgres://relay@db:5432/app
kafka:
  brokers: ["k1:9093"]
  tls: {enabled: true}
  sasl:
    mechanism: SCRAM-SHA-512
    username: relay
`

// Secrets must be able to stay out of the YAML file: from the environment,
// from a mounted file, or by ${NAME} expansion.
func TestKafkaPasswordSources(t *testing.T) {
	t.Run("env", func(t *testing.T) {
		t.Setenv("RELAY_KAFKA_SASL_PASSWORD", "from-env")
		cfg, err := Load(writeConfig(t, saslYAML))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Kafka.SASL.Password != "from-env" {
			t.Errorf("password = %q", cfg.Kafka.SASL.Password)
		}
	})
	t.Run("file", func(t *testing.T) {
		pw := filepath.Join(t.TempDir(), "kafka-password")
		if err := os.WriteFile(pw, []byte("from-file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(writeConfig(t, saslYAML+"    password_file: "+pw+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Kafka.SASL.Password != "from-file" {
			t.Errorf("password = %q (a trailing newline must be dropped)", cfg.Kafka.SASL.Password)
		}
	})
	t.Run("expansion", func(t *testing.T) {
		t.Setenv("KAFKA_PW", "from-expansion")
		cfg, err := Load(writeConfig(t, saslYAML+"    password: ${KAFKA_PW}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Kafka.SASL.Password != "from-expansion" {
			t.Errorf("password = %q", cfg.Kafka.SASL.Password)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := Load(writeConfig(t, saslYAML))
		if err == nil || !strings.Contains(err.Error(), "kafka.sasl.password: required with kafka.sasl.mechanism SCRAM-SHA-512") {
			t.Errorf("Load without a password = %v", err)
		}
	})
	t.Run("unreadable-file", func(t *testing.T) {
		_, err := Load(writeConfig(t, saslYAML+"    password_file: /nonexistent/pw\n"))
		if err == nil || !strings.Contains(err.Error(), "kafka.sasl.password_file") {
			t.Errorf("Load with a missing password file = %v", err)
		}
	})
}

func TestSecurityValidation(t *testing.T) {
	base := func() Config {
		c := Default()
		c.Postgres.URL = "postgres://relay@db/app"
		c.Kafka.Brokers = []string{"k:9092"}
		c.Outbox = []Table{DefaultTable(DefaultOutboxTable)}
		return c
	}
	cases := []struct {
		name  string
		edit  func(*Config)
		wants []string
	}{
		{"tls-files-without-enabled", func(c *Config) { c.Kafka.TLS.CAFile = "/ca.pem" },
			[]string{"kafka.tls.enabled: is false but other kafka.tls keys are set"}},
		{"insecure-without-enabled", func(c *Config) { c.Kafka.TLS.InsecureSkipVerify = true },
			[]string{"kafka.tls.enabled"}},
		{"bad-oversized", func(c *Config) { c.Kafka.Oversized = "drop" },
			[]string{`kafka.oversized: "drop" must be stop or dead_letter`}},
		{"dead-letter-without-topic", func(c *Config) { c.Kafka.Oversized = UnpublishableDeadLetter },
			[]string{"kafka.dead_letter_topic: required with kafka.oversized dead_letter"}},
		{"bad-topic", func(c *Config) {
			c.Kafka.Oversized, c.Kafka.DeadLetterTopic = UnpublishableDeadLetter, "dead letters!"
		}, []string{`kafka.dead_letter_topic: "dead letters!" is not a valid Kafka topic name`}},
		{"bad-on-unpublishable", func(c *Config) { c.Kafka.OnUnpublishable = "skip" },
			[]string{`kafka.on_unpublishable: "skip" must be stop or dead_letter`}},
		{"on-unpublishable-dead-letter-without-topic", func(c *Config) { c.Kafka.OnUnpublishable = UnpublishableDeadLetter },
			[]string{"kafka.dead_letter_topic: required with kafka.on_unpublishable dead_letter"}},
		{"alias-disagrees", func(c *Config) {
			c.Kafka.OnUnpublishable, c.Kafka.Oversized, c.Kafka.DeadLetterTopic = UnpublishableStop, UnpublishableDeadLetter, "dlq"
		}, []string{"kafka.on_unpublishable: stop disagrees with kafka.oversized: dead_letter"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.edit(&cfg)
			err := cfg.Validate()
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Validate = %v", err)
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("no problem %q in %v", w, err)
				}
			}
		})
	}
	ok := base()
	ok.Kafka.Oversized, ok.Kafka.DeadLetterTopic = UnpublishableDeadLetter, "relay.dead-letter_v1"
	if err := ok.Validate(); err != nil {
		t.Errorf("valid dead letter config: %v", err)
	}
	if d, key := Default().Kafka.Unpublishable(); d != UnpublishableStop || key != "kafka.on_unpublishable" {
		t.Errorf("default policy = %q from %s, want stop from kafka.on_unpublishable", d, key)
	}
	// The deprecated name still works alone, and agreeing with the new one.
	for _, k := range []Kafka{{Oversized: UnpublishableDeadLetter}, {Oversized: UnpublishableDeadLetter, OnUnpublishable: UnpublishableDeadLetter}} {
		cfg := ok
		cfg.Kafka.Oversized, cfg.Kafka.OnUnpublishable = k.Oversized, k.OnUnpublishable
		if err := cfg.Validate(); err != nil {
			t.Errorf("oversized %q, on_unpublishable %q: %v", k.Oversized, k.OnUnpublishable, err)
		}
		if p, _ := cfg.Kafka.Unpublishable(); p != UnpublishableDeadLetter {
			t.Errorf("oversized %q, on_unpublishable %q: policy %q", k.Oversized, k.OnUnpublishable, p)
		}
	}
}

func TestTopicTemplatesKafkaRefuses(t *testing.T) {
	for _, c := range []struct {
		topic string
		ok    bool
	}{
		{DefaultTopic, true}, {"${routedByValue}", true}, {"orders", true}, {".${routedByValue}", true},
		{"orders/${routedByValue}", false}, {"outbox events", false}, {".", false}, {"..", false},
		{strings.Repeat("x", 250), false}, {strings.Repeat("x", 250) + "${routedByValue}", false},
	} {
		cfg := Default()
		cfg.Postgres.URL = "postgres://relay@db/app"
		cfg.Kafka.Brokers = []string{"k:9092"}
		tb := DefaultTable("public.outbox")
		tb.Topic = c.topic
		cfg.Outbox = []Table{tb}
		m := DefaultMessage("audit")
		m.Topic = c.topic
		cfg.Messages = []Message{m}
		err := cfg.Validate()
		if c.ok != (err == nil) {
			t.Errorf("topic %q: %v", c.topic, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "outbox[0].topic: ") || !strings.Contains(err.Error(), "messages[0].topic: ") ||
			!strings.Contains(err.Error(), "can never be a legal Kafka topic name")) {
			t.Errorf("topic %q: %v, want both entries named", c.topic, err)
		}
	}
}
