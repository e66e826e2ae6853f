// Package config loads the relay's YAML configuration, applies RELAY_* environment
// overrides and defaults, and validates it, reporting every problem at once.
//
// Every scalar key can be set from the environment as RELAY_<SECTION>_<KEY>, for
// example RELAY_POSTGRES_URL or RELAY_KAFKA_BROKERS (comma-separated). Values in
// the YAML file may reference the environment as ${NAME}; ${routedByValue} is left
// alone because it is a topic template placeholder, not a variable.
package config

import (
	"regexp"
	"time"
)

// Config is the whole relay configuration.
type Config struct {
	Postgres Postgres  `mapstructure:"postgres"`
	Kafka    Kafka     `mapstructure:"kafka"`
	Outbox   []Table   `mapstructure:"outbox"`
	Messages []Message `mapstructure:"messages"`
	Pipeline Pipeline  `mapstructure:"pipeline"`
	Snapshot Snapshot  `mapstructure:"snapshot"`
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
	// SlotFailover makes the slot a failover slot (PostgreSQL 17+), which
	// standbys with sync_replication_slots keep a copy of, so the relay
	// carries on from it after a promotion.
	SlotFailover bool `mapstructure:"slot_failover"`
	// OnSlotLost says what to do when the slot is missing, belongs to
	// another database, or is ahead of the relay's progress record: events
	// may be missing, so the default stops rather than skips.
	OnSlotLost OnSlotLost `mapstructure:"on_slot_lost"`
}

// Kafka configures the producer. Delivery settings that the guarantees depend on
// (acks=all, idempotence, unlimited retries) are not configurable.
type Kafka struct {
	Brokers         []string    `mapstructure:"brokers"`
	ClientID        string      `mapstructure:"client_id"`
	Version         string      `mapstructure:"version"`
	Partitioner     Partitioner `mapstructure:"partitioner"`
	Compression     Compression `mapstructure:"compression"`
	MaxMessageBytes int         `mapstructure:"max_message_bytes"`
	// Linger is how long the producer may hold a broker's first waiting
	// record to send it with the ones that follow in one produce request
	// (for exactly_once, sarama's Flush.Frequency). Zero sends at once;
	// records that arrive while a request is in flight share the next one
	// either way.
	Linger time.Duration `mapstructure:"linger"`
	// ProgressTopic holds the relay's progress records (compacted, one
	// partition, created when missing).
	ProgressTopic string `mapstructure:"progress_topic"`
	TLS           TLS    `mapstructure:"tls"`
	SASL          SASL   `mapstructure:"sasl"`

	// OnUnpublishable is the fate of an event that can never be published
	// as it is (an illegal topic name, a topic the brokers refuse, an
	// explicit partition the topic lacks, a record over MaxMessageBytes):
	// stop, or a stand-in to DeadLetterTopic. Read the policy in effect with
	// Unpublishable: empty means unset.
	OnUnpublishable OnUnpublishable `mapstructure:"on_unpublishable"`
	// Oversized is OnUnpublishable's deprecated name, from when only
	// oversized events had a policy.
	Oversized       OnUnpublishable `mapstructure:"oversized"`
	DeadLetterTopic string          `mapstructure:"dead_letter_topic"`

	// Delivery chooses at-least-once (the default) or exactly-once, Kafka
	// transactions that carry the progress record with the events.
	Delivery Delivery `mapstructure:"delivery"`
	// TransactionalID names the relay to the transaction coordinator; every
	// replica of one relay shares it, which is what fences a zombie.
	// Empty means "relay-<slot>".
	TransactionalID string `mapstructure:"transactional_id"`
}

// Unpublishable returns the policy for unpublishable events and the key it
// comes from (kafka.on_unpublishable, or the deprecated kafka.oversized), so
// that messages name the key the user wrote. Neither set means stop.
func (k Kafka) Unpublishable() (policy OnUnpublishable, key string) {
	switch {
	case k.OnUnpublishable != UnpublishableUnset:
		return k.OnUnpublishable, "kafka.on_unpublishable"
	case k.Oversized != UnpublishableUnset:
		return k.Oversized, "kafka.oversized"
	}
	return UnpublishableStop, "kafka.on_unpublishable"
}

// ExactlyOnce reports whether events go out in Kafka transactions.
func (k Kafka) ExactlyOnce() bool { return k.Delivery == DeliveryExactlyOnce }

// TransactionalID is kafka.transactional_id, defaulting to relay-<slot>.
func (c *Config) TransactionalID() string {
	if c.Kafka.TransactionalID != "" {
		return c.Kafka.TransactionalID
	}
	return "relay-" + c.Postgres.Slot
}

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
	Mechanism    SASLMechanism `mapstructure:"mechanism"`
	Username     string        `mapstructure:"username"`
	Password     Secret        `mapstructure:"password"`
	PasswordFile string        `mapstructure:"password_file"`
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
	OnUpdate                OnUpdate          `mapstructure:"on_update"`
	OnMissingColumn         OnMissingColumn   `mapstructure:"on_missing_column"`
	Snapshot                TableSnapshot     `mapstructure:"snapshot" json:"-"` // an order, not a mapping: left out of the progress record's fingerprint
	// CloudEvents adds CloudEvents 1.0 binary-mode headers (ce_*) to the
	// records; CloudEventsSource is their ce_source, by default
	// /relay/<database>/<table>.
	CloudEvents       bool   `mapstructure:"cloudevents"`
	CloudEventsSource string `mapstructure:"cloudevents_source"`
	// TraceColumn holds the writer's trace context (a W3C traceparent, or
	// Debezium's tracingspancontext properties text), published as the
	// traceparent and tracestate headers.
	TraceColumn string `mapstructure:"trace_column"`

	// routeRe is RouteRegex compiled by Validate; see RouteRegexp.
	routeRe *regexp.Regexp

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
	return t.OnUpdateSet || t.OnUpdate == OnUpdateError || t.OnUpdate == OnUpdateFatal
}

// RouteRegexp returns route_regex as compiled by Validate (Load validates),
// anchored at both ends because Kafka Connect's RegexRouter matches the whole
// route-by value; nil without a route_regex or before Validate.
func (t Table) RouteRegexp() *regexp.Regexp { return t.routeRe }

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
	// As for tables; the default source is /relay/<database>/message/<prefix>.
	CloudEvents       bool   `mapstructure:"cloudevents"`
	CloudEventsSource string `mapstructure:"cloudevents_source"`
}

// Pipeline bounds memory and sets the shutdown and confirmation cadence.
type Pipeline struct {
	MaxInflightEvents int           `mapstructure:"max_inflight_events"`
	MaxInflightBytes  int           `mapstructure:"max_inflight_bytes"`
	DrainTimeout      time.Duration `mapstructure:"drain_timeout"`
	StatusInterval    time.Duration `mapstructure:"status_interval"`
	MaxBackoff        time.Duration `mapstructure:"max_backoff"`
	StallTimeout      time.Duration `mapstructure:"stall_timeout"`

	// With kafka.delivery exactly_once: a Kafka transaction is committed
	// when it is TransactionInterval old, or holds TransactionMaxEvents
	// events or TransactionMaxBytes bytes, whichever comes first.
	TransactionInterval  time.Duration `mapstructure:"transaction_interval"`
	TransactionMaxEvents int           `mapstructure:"transaction_max_events"`
	TransactionMaxBytes  int           `mapstructure:"transaction_max_bytes"`
}

// Snapshot says whether rows that exist before the relay's slot are
// published, and in which order.
type Snapshot struct {
	Mode SnapshotMode `mapstructure:"mode"`
	// OrderBy is a comma-separated column list giving the publish order of
	// every table that sets none itself; empty means physical order.
	OrderBy   string `mapstructure:"order_by"`
	BatchSize int    `mapstructure:"batch_size"`
}

// TableSnapshot overrides the snapshot settings for one table.
type TableSnapshot struct {
	OrderBy string `mapstructure:"order_by"`
}

// SnapshotOrderBy returns the column list that orders t's snapshot, or ""
// for physical order.
func (c *Config) SnapshotOrderBy(t Table) string {
	if t.Snapshot.OrderBy != "" {
		return t.Snapshot.OrderBy
	}
	return c.Snapshot.OrderBy
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
	Level  LogLevel  `mapstructure:"level"`
	Format LogFormat `mapstructure:"format"`
}
