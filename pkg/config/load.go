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

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Load reads the YAML file at path (optional: "" means environment and defaults
// only), applies environment overrides, fills defaults and validates.
func Load(path string) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix("RELAY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	cfg := Default()
	// viper consults the environment only for keys it knows about; binding
	// them, rather than registering defaults, leaves Default the one source
	// of values.
	bindEnv(v, "", reflect.TypeOf(cfg))

	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading config file: %w", err)
		}
		if err := v.ReadConfig(bytes.NewReader([]byte(expandEnv(string(raw))))); err != nil {
			return nil, fmt.Errorf("parsing config file %s: %w", path, err)
		}
	}
	// List entries have no place in Default; each starts from its own
	// default, which the entry's keys then override.
	tables := listDefaults(v, "outbox", DefaultTable(""))
	cfg.Outbox = tables.entries
	msgs := listDefaults(v, "messages", DefaultMessage(""))
	cfg.Messages = msgs.entries
	err := v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
	})
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	for i := range cfg.Outbox {
		// Only an on_update the user wrote asks the publication for updates.
		cfg.Outbox[i].OnUpdateSet = tables.set(i, "on_update")
	}
	if names := os.Getenv("RELAY_OUTBOX_TABLES"); names != "" {
		cfg.Outbox = nil
		for _, t := range strings.Split(names, ",") {
			cfg.Outbox = append(cfg.Outbox, DefaultTable(strings.TrimSpace(t)))
		}
	}
	if len(cfg.Outbox) == 0 && len(cfg.Messages) == 0 {
		cfg.Outbox = []Table{DefaultTable(DefaultOutboxTable)}
	}
	if err := cfg.resolveSecrets(); err != nil {
		return nil, err
	}
	cfg.defaultEventSources()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// bindEnv registers every scalar key of the struct type t with viper, so that
// RELAY_<SECTION>_<KEY> overrides it. Lists of structs (outbox, messages) are
// set in YAML only (or, for outbox, RELAY_OUTBOX_TABLES).
func bindEnv(v *viper.Viper, prefix string, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		if name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		switch {
		case f.Type.Kind() == reflect.Struct:
			bindEnv(v, key, f.Type)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
		default:
			_ = v.BindEnv(key) // fails only without a key
		}
	}
}

// listEntries holds the defaults the entries of a YAML list start from and
// the keys each entry sets.
type listEntries[T any] struct {
	entries []T
	raw     []map[string]any
}

// listDefaults returns one copy of def per entry of the YAML list at key, for
// mapstructure to decode each entry into. A key set to "" counts as unset
// (the default applies), as it always has for outbox entries.
func listDefaults[T any](v *viper.Viper, key string, def T) listEntries[T] {
	var l listEntries[T]
	items, ok := v.Get(key).([]any)
	if !ok {
		return l
	}
	for _, it := range items {
		m, _ := it.(map[string]any)
		if m != nil {
			dropEmptyStrings(m, reflect.TypeOf(def))
		}
		l.entries = append(l.entries, def)
		l.raw = append(l.raw, m)
	}
	v.Set(key, items)
	return l
}

// set reports whether entry i of the list sets key.
func (l listEntries[T]) set(i int, key string) bool {
	if i >= len(l.raw) {
		return false
	}
	for k := range l.raw[i] {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// dropEmptyStrings deletes from m the keys that set a string field of the
// struct type t to "", recursing into nested structs, so that they take the
// default. Map-valued fields (headers) keep their empty values, which mean
// something there.
func dropEmptyStrings(m map[string]any, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		for k, val := range m {
			if !strings.EqualFold(k, name) {
				continue
			}
			switch f.Type.Kind() {
			case reflect.String:
				if s, ok := val.(string); ok && s == "" {
					delete(m, k)
				}
			case reflect.Struct:
				if sub, ok := val.(map[string]any); ok {
					dropEmptyStrings(sub, f.Type)
				}
			}
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
