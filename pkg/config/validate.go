package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ValidationError lists every problem found in a configuration, each naming
// the key at fault, so a user fixes them in one round rather than one per run.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid config: " + e.Problems[0]
	}
	return fmt.Sprintf("invalid config (%d problems): %s", len(e.Problems), strings.Join(e.Problems, "; "))
}

// Validate reports every problem in c at once.
func (c *Config) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	switch {
	case c.Postgres.URL == "":
		add("postgres.url: required (or set RELAY_POSTGRES_URL)")
	default:
		if _, err := pgx.ParseConfig(c.Postgres.URL.Reveal()); err != nil {
			add("postgres.url: cannot parse: %s", c.Postgres.URL.RedactError(err))
		}
	}
	if !slotName.MatchString(c.Postgres.Slot) {
		add("postgres.slot: %q must be 1-63 lowercase letters, digits or underscores", c.Postgres.Slot)
	}
	if err := checkIdent(c.Postgres.Publication); err != nil {
		add("postgres.publication: %v", err)
	}

	if len(c.Kafka.Brokers) == 0 {
		add("kafka.brokers: at least one broker is required (or set RELAY_KAFKA_BROKERS)")
	}
	for i, b := range c.Kafka.Brokers {
		if !strings.Contains(b, ":") {
			add("kafka.brokers[%d]: %q must be host:port", i, b)
		}
	}
	switch c.Kafka.Partitioner {
	case "murmur2", "fnv1a", "random":
	default:
		add("kafka.partitioner: %q must be murmur2 (Java client default), fnv1a (sarama default) or random", c.Kafka.Partitioner)
	}
	switch c.Kafka.Compression {
	case "none", "gzip", "snappy", "lz4", "zstd":
	default:
		add("kafka.compression: %q must be one of none, gzip, snappy, lz4, zstd", c.Kafka.Compression)
	}
	if c.Kafka.MaxMessageBytes <= 0 {
		add("kafka.max_message_bytes: must be positive")
	}
	switch c.Kafka.SASL.Mechanism {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.Username == "" {
			add("kafka.sasl.username: required with kafka.sasl.mechanism %s", c.Kafka.SASL.Mechanism)
		}
	default:
		add("kafka.sasl.mechanism: %q must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.Kafka.SASL.Mechanism)
	}
	if (c.Kafka.TLS.CertFile == "") != (c.Kafka.TLS.KeyFile == "") {
		add("kafka.tls: cert_file and key_file must be set together")
	}
	// Security (issue 7): no silent plaintext, no login without a password,
	// and a known fate for oversized events.
	if tl := c.Kafka.TLS; !tl.Enabled && (tl.CAFile != "" || tl.CertFile != "" || tl.KeyFile != "" || tl.ServerName != "" || tl.InsecureSkipVerify) {
		add("kafka.tls.enabled: is false but other kafka.tls keys are set; set enabled: true (the relay does not fall back to plaintext)")
	}
	if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.Password == "" {
		add("kafka.sasl.password: required with kafka.sasl.mechanism %s (set RELAY_KAFKA_SASL_PASSWORD or kafka.sasl.password_file)", c.Kafka.SASL.Mechanism)
	}
	switch c.Kafka.Oversized {
	case OversizedStop:
	case OversizedDeadLetter:
		if c.Kafka.DeadLetterTopic == "" {
			add("kafka.dead_letter_topic: required with kafka.oversized dead_letter")
		}
	default:
		add("kafka.oversized: %q must be stop or dead_letter", c.Kafka.Oversized)
	}
	if t := c.Kafka.DeadLetterTopic; t != "" && (!topicName.MatchString(t) || t == "." || t == "..") {
		add("kafka.dead_letter_topic: %q is not a valid Kafka topic name (1-249 characters of a-z, A-Z, 0-9, '.', '_', '-')", t)
	}

	seen := map[string]bool{}
	for i, t := range c.Outbox {
		key := fmt.Sprintf("outbox[%d]", i)
		if t.Table == "" {
			add("%s.table: required", key)
			continue
		}
		if _, _, err := SplitTable(t.Table); err != nil {
			add("%s.table: %v", key, err)
		}
		if seen[t.Table] {
			add("%s.table: %s is listed twice", key, t.Table)
		}
		seen[t.Table] = true
		cols := map[string]string{"id": t.Columns.ID, "key": t.Columns.Key, "payload": t.Columns.Payload,
			"route_by": t.Columns.RouteBy, "type": t.Columns.Type}
		for _, name := range []string{"id", "key", "payload", "route_by", "type"} {
			if cols[name] == "" {
				add("%s.columns.%s: required", key, name)
			}
		}
		if strings.Count(t.Topic, "${routedByValue}") > 1 {
			add("%s.topic: ${routedByValue} may appear once", key)
		}
		if t.Topic == "" {
			add("%s.topic: required", key)
		}
		if t.RouteRegex != "" {
			re, err := regexp.Compile(t.RouteRegex)
			if err != nil {
				add("%s.route_regex: %v", key, err)
			} else if re.SubexpIndex("routedByValue") < 0 {
				add("%s.route_regex: needs a named group (?<routedByValue>...) or (?P<routedByValue>...)", key)
			}
		}
		switch t.OnUpdate {
		case "warn", "error", "fatal":
		default:
			add("%s.on_update: %q must be warn, error or fatal", key, t.OnUpdate)
		}
		switch t.OnMissingColumn {
		case "error", "ignore":
		default:
			add("%s.on_missing_column: %q must be error or ignore", key, t.OnMissingColumn)
		}
	}
	for i, m := range c.Messages {
		if m.Prefix == "" {
			add("messages[%d].prefix: required", i)
		}
	}

	pl := c.Pipeline
	if pl.MaxInflightEvents < 1 {
		add("pipeline.max_inflight_events: must be at least 1")
	}
	if pl.MaxInflightBytes < 1024 {
		add("pipeline.max_inflight_bytes: must be at least 1024")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"drain_timeout", pl.DrainTimeout}, {"status_interval", pl.StatusInterval}, {"max_backoff", pl.MaxBackoff}, {"stall_timeout", pl.StallTimeout}} {
		if d.v <= 0 {
			add("pipeline.%s: must be a positive duration", d.key)
		}
	}

	switch c.Snapshot.Mode {
	case SnapshotInitial, SnapshotNever, SnapshotInitialOnly:
	default:
		add("snapshot.mode: %q must be initial, never or initial_only", c.Snapshot.Mode)
	}
	if c.Snapshot.BatchSize < 1 {
		add("snapshot.batch_size: must be at least 1")
	}
	if _, err := SplitColumns(c.Snapshot.OrderBy); err != nil {
		add("snapshot.order_by: %v", err)
	}
	for i, t := range c.Outbox {
		if _, err := SplitColumns(t.Snapshot.OrderBy); err != nil {
			add("outbox[%d].snapshot.order_by: %v", i, err)
		}
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level: %q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format: %q must be json or console", c.Log.Format)
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// topicName is Kafka's legal topic name (Topic.validate in the Java client).
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func checkIdent(s string) error {
	if s == "" {
		return fmt.Errorf("required")
	}
	if len(s) > 63 {
		return fmt.Errorf("%q is longer than 63 bytes", s)
	}
	if strings.ContainsRune(s, 0) {
		return fmt.Errorf("contains a NUL byte")
	}
	return nil
}

// SplitTable splits "schema.table" (either part optionally double-quoted, as in
// SQL) into its unquoted parts; a bare name means schema public. Unquoted parts
// fold to lower case as Postgres does.
func SplitTable(s string) (schema, table string, err error) {
	parts, err := splitIdents(s)
	if err != nil {
		return "", "", err
	}
	switch len(parts) {
	case 1:
		return "public", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("%q must be table or schema.table", s)
}

// SplitColumns splits a comma-separated list of column names (each
// optionally double-quoted) into unquoted names; "" gives none.
func SplitColumns(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var cols []string
	for _, part := range splitOutsideQuotes(s, ',') {
		id, err := splitIdents(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		if len(id) != 1 {
			return nil, fmt.Errorf("%q is not a column name", strings.TrimSpace(part))
		}
		cols = append(cols, id[0])
	}
	return cols, nil
}

// splitOutsideQuotes splits s at sep where sep is not inside double quotes.
func splitOutsideQuotes(s string, sep byte) []string {
	var parts []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func splitIdents(s string) ([]string, error) {
	var parts []string
	for i := 0; ; {
		var part string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return nil, fmt.Errorf("%q has an unterminated quoted identifier", s)
				}
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			part, i = b.String(), j+1
		} else {
			j := i
			for j < len(s) && s[j] != '.' {
				j++
			}
			part = strings.ToLower(strings.TrimSpace(s[i:j]))
			if strings.ContainsAny(part, "\" ;") {
				return nil, fmt.Errorf("%q: unquoted identifier %q has characters that need double quotes", s, part)
			}
			i = j
		}
		if err := checkIdent(part); err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		parts = append(parts, part)
		if i >= len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("%q: expected '.' after quoted identifier", s)
		}
		i++
	}
}
