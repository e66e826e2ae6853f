// Package config loads the relay's YAML configuration, applies RELAY_* environment
// overrides and defaults, and validates it, reporting every problem at once.
//
// Every scalar key can be set from the environment as RELAY_<SECTION>_<KEY>, for
// example RELAY_POSTGRES_URL or RELAY_KAFKA_BROKERS (comma-separated). Values in
// the YAML file may reference the environment as ${NAME}; ${routedByValue} is left
// alone because it is a topic template placeholder, not a variable.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Config is the whole relay configuration.
type Config struct {
	Postgres Postgres  `mapstructure:"postgres"`
	Kafka    Kafka     `mapstructure:"kafka"`
	Outbox   []Table   `mapstructure:"outbox"`
	Messages []Message `mapstructure:"messages"`
	Pipeline Pipeline  `mapstructure:"pipeline"`
	HTTP     HTTP      `mapstructure:"http"`
	Log      Log       `mapstructure:"log"`
}

// Postgres says where the outbox lives and which slot and publication carry it.
type Postgres struct {
	URL               ConnString `mapstructure:"url"`
	PasswordFile      string     `mapstructure:"password_file"`
	Slot              string     `mapstructure:"slot"`
	Publication       string     `mapstructure:"publication"`
	CreatePublication bool       `mapstructure:"create_publication"`
	CreateSlot        bool       `mapstructure:"create_slot"`
}

// Kafka configures the producer. Delivery settings that the guarantees depend on
// (acks=all, idempotence, unlimited retries) are not configurable.
type Kafka struct {
	Brokers         []string `mapstructure:"brokers"`
	ClientID        string   `mapstructure:"client_id"`
	Version         string   `mapstructure:"version"`
	Partitioner     string   `mapstructure:"partitioner"`
	Compression     string   `mapstructure:"compression"`
	MaxMessageBytes int      `mapstructure:"max_message_bytes"`
	TLS             TLS      `mapstructure:"tls"`
	SASL            SASL     `mapstructure:"sasl"`

	// Security (issue 7): what to do with an event larger than
	// MaxMessageBytes: OversizedStop or OversizedDeadLetter to DeadLetterTopic.
	Oversized       string `mapstructure:"oversized"`
	DeadLetterTopic string `mapstructure:"dead_letter_topic"`
}

// kafka.oversized values.
const (
	OversizedStop       = "stop"
	OversizedDeadLetter = "dead_letter"
)

// TLS configures encryption to the brokers.
type TLS struct {
	Enabled            bool   `mapstructure:"enabled"`
	CAFile             string `mapstructure:"ca_file"`
	CertFile           string `mapstructure:"cert_file"`
	KeyFile            string `mapstructure:"key_file"`
	ServerName         string `mapstructure:"server_name"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// SASL configures broker authentication.
type SASL struct {
	Mechanism    string `mapstructure:"mechanism"`
	Username     string `mapstructure:"username"`
	Password     Secret `mapstructure:"password"`
	PasswordFile string `mapstructure:"password_file"`
}

// Table maps the rows of one outbox table to Kafka records. The defaults are
// those of Debezium's Outbox Event Router.
type Table struct {
	Table                   string            `mapstructure:"table"`
	Columns                 Columns           `mapstructure:"columns"`
	Topic                   string            `mapstructure:"topic"`
	RouteRegex              string            `mapstructure:"route_regex"`
	Headers                 map[string]string `mapstructure:"headers"`
	PartitionColumn         string            `mapstructure:"partition_column"`
	TombstoneOnEmptyPayload bool              `mapstructure:"tombstone_on_empty_payload"`
	OnUpdate                string            `mapstructure:"on_update"`
	OnMissingColumn         string            `mapstructure:"on_missing_column"`

	// OnUpdateSet records that on_update was written in the config rather
	// than defaulted: only then does the relay have the publication it
	// creates publish updates (see WantsUpdates).
	OnUpdateSet bool `mapstructure:"-"`
}

// WantsUpdates reports whether the publication must publish updates for this
// table. Left at its default, on_update keeps the publication insert-only (so
// an UPDATE goes unseen, as it always did); set explicitly, even to warn, it
// asks for updates so that the chosen behaviour can fire.
func (t Table) WantsUpdates() bool {
	return t.OnUpdateSet || t.OnUpdate == "error" || t.OnUpdate == "fatal"
}

// Columns names the outbox table's columns that carry each part of a record.
type Columns struct {
	ID        string `mapstructure:"id"`
	Key       string `mapstructure:"key"`
	Payload   string `mapstructure:"payload"`
	RouteBy   string `mapstructure:"route_by"`
	Type      string `mapstructure:"type"`
	Timestamp string `mapstructure:"timestamp"`
}

// Message routes transactional logical decoding messages
// (pg_logical_emit_message) with a given prefix.
type Message struct {
	Prefix string `mapstructure:"prefix"`
	Topic  string `mapstructure:"topic"`
}

// Pipeline bounds memory and sets the shutdown and confirmation cadence.
type Pipeline struct {
	MaxInflightEvents int           `mapstructure:"max_inflight_events"`
	MaxInflightBytes  int           `mapstructure:"max_inflight_bytes"`
	DrainTimeout      time.Duration `mapstructure:"drain_timeout"`
	StatusInterval    time.Duration `mapstructure:"status_interval"`
	MaxBackoff        time.Duration `mapstructure:"max_backoff"`
	StallTimeout      time.Duration `mapstructure:"stall_timeout"`
}

// HTTP serves health and metrics when Listen is set.
type HTTP struct {
	Listen string `mapstructure:"listen"`
	// Pprof exposes /debug/pprof/ for profiling; off by default because it
	// reveals internals to whoever can reach the listener.
	Pprof bool `mapstructure:"pprof"`
}

// Log configures logging on stderr.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// DefaultTopic is Debezium's default route: outbox.event.<aggregatetype>.
const DefaultTopic = "outbox.event.${routedByValue}"

// Default returns the configuration used for every key a user leaves unset.
func Default() Config {
	return Config{
		Postgres: Postgres{
			Slot:              "outbox_relay",
			Publication:       "outbox_relay",
			CreatePublication: true,
			CreateSlot:        true,
		},
		Kafka: Kafka{
			ClientID:        "relay",
			Version:         "2.8.0",
			Partitioner:     "murmur2",
			Compression:     "none",
			MaxMessageBytes: 1000000,
			Oversized:       OversizedStop,
		},
		Pipeline: Pipeline{
			MaxInflightEvents: 50000,
			MaxInflightBytes:  16 << 20,
			DrainTimeout:      30 * time.Second,
			StatusInterval:    time.Second,
			MaxBackoff:        30 * time.Second,
			StallTimeout:      5 * time.Minute,
		},
		Log: Log{Level: "info", Format: "json"},
	}
}

// DefaultTable returns the Debezium-default mapping for the named table.
func DefaultTable(name string) Table {
	return Table{
		Table: name,
		Columns: Columns{
			ID: "id", Key: "aggregateid", Payload: "payload", RouteBy: "aggregatetype", Type: "type",
		},
		Topic:           DefaultTopic,
		OnUpdate:        "warn",
		OnMissingColumn: "error",
	}
}

// Load reads the YAML file at path (optional: "" means environment and defaults
// only), applies environment overrides, fills defaults and validates.
func Load(path string) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix("RELAY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	def := Default()
	// viper only consults the environment for keys it knows about, so every
	// scalar key is registered through its default.
	registerDefaults(v, "", reflect.ValueOf(def))

	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading config file: %w", err)
		}
		if err := v.ReadConfig(bytes.NewReader([]byte(expandEnv(string(raw))))); err != nil {
			return nil, fmt.Errorf("parsing config file %s: %w", path, err)
		}
	}
	cfg := def
	err := v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
	})
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if tables := os.Getenv("RELAY_OUTBOX_TABLES"); tables != "" {
		cfg.Outbox = nil
		for _, t := range strings.Split(tables, ",") {
			cfg.Outbox = append(cfg.Outbox, Table{Table: strings.TrimSpace(t)})
		}
	}
	if err := cfg.resolveSecrets(); err != nil {
		return nil, err
	}
	cfg.applyTableDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func registerDefaults(v *viper.Viper, prefix string, rv reflect.Value) {
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		key := f.Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		fv := rv.Field(i)
		switch {
		case f.Type == reflect.TypeOf(time.Duration(0)):
			v.SetDefault(key, fv.Interface())
		case f.Type.Kind() == reflect.Struct:
			registerDefaults(v, key, fv)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			// lists of tables are YAML-only (or RELAY_OUTBOX_TABLES)
		default:
			v.SetDefault(key, fv.Interface())
		}
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv substitutes ${NAME} from the environment, leaving the topic
// placeholder ${routedByValue} and unset variables untouched so that a typo
// shows up in validation rather than as an empty string.
func expandEnv(s string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		if name == "routedByValue" {
			return m
		}
		if val, ok := os.LookupEnv(name); ok {
			return val
		}
		return m
	})
}

// resolveSecrets reads *_file keys so passwords can come from mounted secrets.
func (c *Config) resolveSecrets() error {
	if c.Postgres.PasswordFile != "" {
		pw, err := readSecret(c.Postgres.PasswordFile)
		if err != nil {
			return fmt.Errorf("postgres.password_file: %w", err)
		}
		u, err := url.Parse(c.Postgres.URL.Reveal())
		if err != nil || u.Scheme == "" {
			return errors.New("postgres.password_file needs postgres.url in URL form (postgres://user@host/db)")
		}
		user := ""
		if u.User != nil {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, pw)
		c.Postgres.URL = ConnString(u.String())
	}
	if c.Kafka.SASL.PasswordFile != "" {
		if c.Kafka.SASL.Password != "" {
			// Two sources for one secret: which wins would be a guess.
			return errors.New("kafka.sasl: set password or password_file, not both")
		}
		pw, err := readSecret(c.Kafka.SASL.PasswordFile)
		if err != nil {
			return fmt.Errorf("kafka.sasl.password_file: %w", err)
		}
		c.Kafka.SASL.Password = Secret(pw)
	}
	return nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (c *Config) applyTableDefaults() {
	if len(c.Outbox) == 0 && len(c.Messages) == 0 {
		c.Outbox = []Table{{Table: "public.outbox"}}
	}
	for i := range c.Outbox {
		t := &c.Outbox[i]
		d := DefaultTable(t.Table)
		fill := func(dst *string, def string) {
			if *dst == "" {
				*dst = def
			}
		}
		fill(&t.Columns.ID, d.Columns.ID)
		fill(&t.Columns.Key, d.Columns.Key)
		fill(&t.Columns.Payload, d.Columns.Payload)
		fill(&t.Columns.RouteBy, d.Columns.RouteBy)
		fill(&t.Columns.Type, d.Columns.Type)
		fill(&t.Topic, d.Topic)
		t.OnUpdateSet = t.OnUpdate != ""
		fill(&t.OnUpdate, d.OnUpdate)
		fill(&t.OnMissingColumn, d.OnMissingColumn)
	}
	for i := range c.Messages {
		if c.Messages[i].Topic == "" {
			c.Messages[i].Topic = DefaultTopic
		}
	}
}
