package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/internal/ident"
)

// Every section type has a Validate that reports all of its problems, each
// as "key: what is wrong", and Config.Validate collects them. A section at a
// fixed place names its keys in full (kafka.sasl.username); an entry of a
// list (Table, Message) does not know its index, so it names its keys
// relative to itself (route_regex) and Config.Validate prefixes outbox[1].
// All validation lives here, so that a config that loads is one the relay
// can start with: nothing is found wrong only when a component is built.

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

// problems collects "key: message" lines.
type problems []string

// maxLinger bounds kafka.linger: every record may wait that long, so a
// larger value is a mistake for a latency the relay exists to keep low.
const maxLinger = time.Second

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// merge adds the problems of a section's Validate (or of errors.Join'ed
// "key: message" errors), each prefixed with prefix.
func (p *problems) merge(prefix string, err error) {
	if err == nil {
		return
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, q := range ve.Problems {
			*p = append(*p, prefix+q)
		}
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			p.merge(prefix, e)
		}
		return
	}
	*p = append(*p, prefix+err.Error())
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: p}
}

// Validate reports every problem in c at once. It also compiles each
// outbox entry's route_regex, once, for Table.RouteRegexp.
func (c *Config) Validate() error {
	var p problems
	p.merge("", c.Postgres.Validate())
	p.merge("", c.Kafka.Validate())
	seen := map[string]bool{}
	for i := range c.Outbox {
		t := &c.Outbox[i]
		key := fmt.Sprintf("outbox[%d].", i)
		p.merge(key, t.Validate())
		if t.Table == "" {
			continue
		}
		if seen[t.Table] {
			p.add(key+"table", "%s is listed twice", t.Table)
		}
		seen[t.Table] = true
	}
	for i, m := range c.Messages {
		p.merge(fmt.Sprintf("messages[%d].", i), m.Validate())
	}
	p.merge("", c.Pipeline.Validate())
	p.merge("", c.Snapshot.Validate())
	p.merge("", c.HTTP.Validate())
	p.merge("", c.Log.Validate())
	return p.err()
}

// Validate reports every problem in the postgres section.
func (pg Postgres) Validate() error {
	var p problems
	if pg.URL == "" {
		p.add("postgres.url", "required (or set RELAY_POSTGRES_URL)")
	} else if pc, err := pgx.ParseConfig(pg.URL.Reveal()); err != nil {
		p.add("postgres.url", "cannot parse: %s", pg.URL.RedactError(err))
	} else if msg := sessionAttrsProblem(pc.Config); msg != "" {
		p.add("postgres.url", "%s", msg)
	}
	if !slotName.MatchString(pg.Slot) {
		p.add("postgres.slot", "%q must be 1-63 lowercase letters, digits or underscores", pg.Slot)
	}
	if err := ident.Check(pg.Publication); err != nil {
		p.add("postgres.publication", "%v", err)
	}
	if err := pg.OnSlotLost.Validate(); err != nil {
		p.add("postgres.on_slot_lost", "%v", err)
	}
	return p.err()
}

// Validate reports every problem in the kafka section, kafka.tls and
// kafka.sasl included.
func (k Kafka) Validate() error {
	var p problems
	if len(k.Brokers) == 0 {
		p.add("kafka.brokers", "at least one broker is required (or set RELAY_KAFKA_BROKERS)")
	}
	for i, b := range k.Brokers {
		if !strings.Contains(b, ":") {
			p.add(fmt.Sprintf("kafka.brokers[%d]", i), "%q must be host:port", b)
		}
	}
	if _, err := parseKafkaVersion(k.Version); err != nil {
		p.add("kafka.version", "%v", err)
	}
	if err := k.Partitioner.Validate(); err != nil {
		p.add("kafka.partitioner", "%v", err)
	}
	if err := k.Compression.Validate(); err != nil {
		p.add("kafka.compression", "%v", err)
	}
	if k.MaxMessageBytes <= 0 {
		p.add("kafka.max_message_bytes", "must be positive")
	}
	if err := k.Delivery.Validate(); err != nil {
		p.add("kafka.delivery", "%v", err)
	}
	if k.Linger < 0 || k.Linger > maxLinger {
		p.add("kafka.linger", "must be between 0 and %s, not %s", maxLinger, k.Linger)
	}
	// An unpublishable event must have a known fate: stopping, or a dead
	// letter topic that exists as a name Kafka accepts.
	if err := k.OnUnpublishable.Validate(); err != nil {
		p.add("kafka.on_unpublishable", "%v", err)
	}
	if err := k.Oversized.Validate(); err != nil {
		p.add("kafka.oversized", "%v", err)
	}
	if u, o := k.OnUnpublishable, k.Oversized; u != UnpublishableUnset && o != UnpublishableUnset && u != o {
		p.add("kafka.on_unpublishable", "%s disagrees with kafka.oversized: %s, its deprecated name; remove kafka.oversized", u, o)
	}
	if policy, key := k.Unpublishable(); policy == UnpublishableDeadLetter && k.DeadLetterTopic == "" {
		p.add("kafka.dead_letter_topic", "required with %s dead_letter", key)
	}
	if t := k.ProgressTopic; !topicName.MatchString(t) || t == "." || t == ".." {
		p.add("kafka.progress_topic", "%q is not a valid Kafka topic name (1-249 characters of a-z, A-Z, 0-9, '.', '_', '-')", t)
	}
	if t := k.DeadLetterTopic; t != "" && (!topicName.MatchString(t) || t == "." || t == "..") {
		p.add("kafka.dead_letter_topic", "%q is not a valid Kafka topic name (1-249 characters of a-z, A-Z, 0-9, '.', '_', '-')", t)
	}
	p.merge("", k.TLS.Validate())
	p.merge("", k.SASL.Validate())
	return p.err()
}

// SaramaVersion returns kafka.version as sarama's type.
func (k Kafka) SaramaVersion() (sarama.KafkaVersion, error) {
	v, err := parseKafkaVersion(k.Version)
	if err != nil {
		return v, fmt.Errorf("kafka.version: %w", err)
	}
	return v, nil
}

// parseKafkaVersion accepts the versions the producer can run against:
// record headers and idempotence arrived in 0.11.
func parseKafkaVersion(s string) (sarama.KafkaVersion, error) {
	v, err := sarama.ParseKafkaVersion(s)
	if err != nil {
		return v, err
	}
	if !v.IsAtLeast(sarama.V0_11_0_0) {
		return v, fmt.Errorf("%s is too old: headers and idempotence need 0.11 or later", s)
	}
	return v, nil
}

// Validate reports every problem in kafka.tls. With TLS enabled it reads the
// CA and the client key pair, so that an unreadable or malformed file stops
// the relay at start-up, naming the key.
func (t TLS) Validate() error {
	var p problems
	pair := (t.CertFile == "") == (t.KeyFile == "")
	if !pair {
		p.add("kafka.tls", "cert_file and key_file must be set together")
	}
	// TLS keys without enabled: true would otherwise mean plaintext while
	// the operator believes the connection encrypted.
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		p.add("kafka.tls.enabled", "is false but other kafka.tls keys are set; set enabled: true (the relay does not fall back to plaintext)")
	}
	if t.Enabled && pair {
		if _, err := t.ClientConfig(); err != nil {
			p.merge("", err)
		}
	}
	return p.err()
}

// Validate reports every problem in kafka.sasl.
func (s SASL) Validate() error {
	var p problems
	if err := s.Mechanism.Validate(); err != nil {
		p.add("kafka.sasl.mechanism", "%v", err)
	} else if s.Mechanism != SASLNone && s.Username == "" {
		p.add("kafka.sasl.username", "required with kafka.sasl.mechanism %s", s.Mechanism)
	}
	// Logging in without a password would fail on every connection, and
	// lock accounts on brokers that count failures.
	if s.Mechanism != SASLNone && s.Password == "" {
		p.add("kafka.sasl.password", "required with kafka.sasl.mechanism %s (set RELAY_KAFKA_SASL_PASSWORD or kafka.sasl.password_file)", s.Mechanism)
	}
	return p.err()
}

// Validate reports every problem in one outbox entry, naming keys relative
// to it. It compiles route_regex and keeps it for RouteRegexp, so the regexp
// is compiled once, at load.
func (t *Table) Validate() error {
	var p problems
	t.routeRe = nil
	if err := t.Snapshot.Validate(); err != nil {
		p.merge("", err)
	}
	if t.Table == "" {
		p.add("table", "required")
		return p.err()
	}
	if _, _, err := SplitTable(t.Table); err != nil {
		p.add("table", "%v", err)
	}
	for _, c := range []struct{ key, val string }{{"id", t.Columns.ID}, {"key", t.Columns.Key},
		{"payload", t.Columns.Payload}, {"route_by", t.Columns.RouteBy}, {"type", t.Columns.Type}} {
		if c.val == "" {
			p.add("columns."+c.key, "required")
		}
	}
	if strings.Count(t.Topic, "${routedByValue}") > 1 {
		p.add("topic", "${routedByValue} may appear once")
	}
	if t.Topic == "" {
		p.add("topic", "required")
	}
	checkTopicTemplate(&p, t.Topic)
	if t.RouteRegex != "" {
		re, err := compileRouteRegex(t.RouteRegex)
		if err != nil {
			p.add("route_regex", "%v", err)
		} else {
			t.routeRe = re
		}
	}
	if err := t.OnUpdate.Validate(); err != nil {
		p.add("on_update", "%v", err)
	}
	if err := t.OnMissingColumn.Validate(); err != nil {
		p.add("on_missing_column", "%v", err)
	}
	t.validateEventFormat(&p)
	return p.err()
}

// checkTopicTemplate refuses a topic template whose own characters Kafka
// refuses: no route-by value can make it legal, so every event routed by it
// would be unpublishable. Better said at load than on the first event.
func checkTopicTemplate(p *problems, topic string) {
	literal := strings.ReplaceAll(topic, "${routedByValue}", "")
	fixed := literal == topic
	switch {
	case topic == "" || literal == "":
	case fixed && (literal == "." || literal == ".."), !topicName.MatchString(literal):
		p.add("topic", "%q can never be a legal Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', neither \".\" nor \"..\")", topic)
	}
}

// compileRouteRegex compiles route_regex as Kafka Connect's RegexRouter
// applies it: with Matcher.matches(), so the whole value must match, not a
// substring. The expression is anchored at both ends, in a group that keeps
// the user's own flags scoped to it; it is also compiled alone first,
// because the group could make an unbalanced expression such as "a)|(b"
// compile.
func compileRouteRegex(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, err
	}
	if re.SubexpIndex("routedByValue") < 0 {
		return nil, errors.New("needs a named group (?<routedByValue>...) or (?P<routedByValue>...)")
	}
	return re, nil
}

// Validate reports every problem in a table's snapshot section, naming keys
// relative to the table.
func (s TableSnapshot) Validate() error {
	if _, err := SplitColumns(s.OrderBy); err != nil {
		return fmt.Errorf("snapshot.order_by: %w", err)
	}
	return nil
}

// Validate reports every problem in one messages entry, naming keys
// relative to it.
func (m Message) Validate() error {
	var p problems
	if m.Prefix == "" {
		p.add("prefix", "required")
	}
	checkTopicTemplate(&p, m.Topic)
	validateSource(&p, m.CloudEvents, m.CloudEventsSource)
	return p.err()
}

// Validate reports every problem in the pipeline section.
func (pl Pipeline) Validate() error {
	var p problems
	if pl.MaxInflightEvents < 1 {
		p.add("pipeline.max_inflight_events", "must be at least 1")
	}
	if pl.MaxInflightBytes < 1024 {
		p.add("pipeline.max_inflight_bytes", "must be at least 1024")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"drain_timeout", pl.DrainTimeout}, {"status_interval", pl.StatusInterval}, {"max_backoff", pl.MaxBackoff}, {"stall_timeout", pl.StallTimeout}} {
		if d.v <= 0 {
			p.add("pipeline."+d.key, "must be a positive duration")
		}
	}
	// Used with kafka.delivery exactly_once only, but checked always: a
	// bad value should not wait for the mode switch to surface.
	if pl.TransactionInterval <= 0 {
		p.add("pipeline.transaction_interval", "must be a positive duration")
	}
	if pl.TransactionMaxEvents < 1 {
		p.add("pipeline.transaction_max_events", "must be at least 1")
	}
	if pl.TransactionMaxBytes < 1024 {
		p.add("pipeline.transaction_max_bytes", "must be at least 1024")
	}
	return p.err()
}

// Validate reports every problem in the snapshot section.
func (s Snapshot) Validate() error {
	var p problems
	if err := s.Mode.Validate(); err != nil {
		p.add("snapshot.mode", "%v", err)
	}
	if s.BatchSize < 1 {
		p.add("snapshot.batch_size", "must be at least 1")
	}
	if _, err := SplitColumns(s.OrderBy); err != nil {
		p.add("snapshot.order_by", "%v", err)
	}
	return p.err()
}

// Validate reports every problem in the http section.
func (h HTTP) Validate() error {
	var p problems
	if h.Listen != "" {
		if _, _, err := net.SplitHostPort(h.Listen); err != nil {
			p.add("http.listen", "%q must be host:port or :port", h.Listen)
		}
	}
	return p.err()
}

// Validate reports every problem in the log section.
func (l Log) Validate() error {
	var p problems
	if err := l.Level.Validate(); err != nil {
		p.add("log.level", "%v", err)
	}
	if err := l.Format.Validate(); err != nil {
		p.add("log.format", "%v", err)
	}
	return p.err()
}

// sessionAttrsProblem explains why the URL's hosts and target_session_attrs
// could land the relay on a standby: it waits there for a promotion, so
// with several hosts it must be told to pick the primary.
func sessionAttrsProblem(pc pgconn.Config) string {
	attrs := "any"
	if pc.ValidateConnect != nil {
		attrs = "other"
		switch reflect.ValueOf(pc.ValidateConnect).Pointer() {
		case reflect.ValueOf(pgconn.ValidateConnectTargetSessionAttrsReadWrite).Pointer():
			attrs = "read-write"
		case reflect.ValueOf(pgconn.ValidateConnectTargetSessionAttrsPrimary).Pointer():
			attrs = "primary"
		}
	}
	if attrs == "other" {
		return "target_session_attrs must be read-write or primary (or left out with a single host): the relay streams from the primary"
	}
	// sslmode=prefer adds a plaintext fallback to the same host; only
	// distinct hosts count.
	hosts := map[string]bool{fmt.Sprintf("%s:%d", pc.Host, pc.Port): true}
	for _, fb := range pc.Fallbacks {
		hosts[fmt.Sprintf("%s:%d", fb.Host, fb.Port)] = true
	}
	if attrs == "any" && len(hosts) > 1 {
		return fmt.Sprintf("lists %d hosts without target_session_attrs=read-write (or primary): the relay could connect to a standby and wait there while the primary is up", len(hosts))
	}
	return ""
}
