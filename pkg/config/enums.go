package config

import (
	"fmt"
	"slices"
	"strings"
)

// The keys that take one of a fixed set of values have a type each, with
// the values as constants and a Validate that names them. To add a value,
// add its constant and list it in the type's Validate.

// Partitioner is kafka.partitioner: how a record key picks a partition.
type Partitioner string

const (
	PartitionerMurmur2 Partitioner = "murmur2" // the Java client's default
	PartitionerFNV1a   Partitioner = "fnv1a"   // sarama's default
	PartitionerRandom  Partitioner = "random"
)

// Validate reports a value that is not one of the constants.
func (p Partitioner) Validate() error {
	if err := oneOf(p, PartitionerMurmur2, PartitionerFNV1a, PartitionerRandom); err != nil {
		return fmt.Errorf("%q must be murmur2 (Java client default), fnv1a (sarama default) or random", string(p))
	}
	return nil
}

// Compression is kafka.compression, the codec of produced batches.
type Compression string

const (
	CompressionNone   Compression = "none"
	CompressionGzip   Compression = "gzip"
	CompressionSnappy Compression = "snappy"
	CompressionLZ4    Compression = "lz4"
	CompressionZstd   Compression = "zstd"
)

// Validate reports a value that is not one of the constants.
func (c Compression) Validate() error {
	return oneOf(c, CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd)
}

// SASLMechanism is kafka.sasl.mechanism; empty means no SASL.
type SASLMechanism string

const (
	SASLNone        SASLMechanism = ""
	SASLPlain       SASLMechanism = "PLAIN"
	SASLScramSHA256 SASLMechanism = "SCRAM-SHA-256"
	SASLScramSHA512 SASLMechanism = "SCRAM-SHA-512"
)

// Validate reports a value that is not one of the constants.
func (m SASLMechanism) Validate() error {
	if m == SASLNone {
		return nil
	}
	return oneOf(m, SASLPlain, SASLScramSHA256, SASLScramSHA512)
}

// OnUnpublishable is kafka.on_unpublishable (and its deprecated name
// kafka.oversized): the fate of an event that can never be published as it
// is.
type OnUnpublishable string

const (
	// UnpublishableUnset is the default of both keys, so that an explicit
	// choice in either can be told apart; Kafka.Unpublishable reads it as
	// stop.
	UnpublishableUnset      OnUnpublishable = ""
	UnpublishableStop       OnUnpublishable = "stop"        // fail, so that nothing is lost silently
	UnpublishableDeadLetter OnUnpublishable = "dead_letter" // publish a stand-in to kafka.dead_letter_topic
)

// Validate reports a value that is not one of the constants.
func (o OnUnpublishable) Validate() error {
	if o == UnpublishableUnset {
		return nil
	}
	return oneOf(o, UnpublishableStop, UnpublishableDeadLetter)
}

// Delivery is kafka.delivery: what a crash or a broker error may do to what
// consumers see.
type Delivery string

const (
	DeliveryAtLeastOnce Delivery = "at_least_once" // a crash may re-send the unconfirmed tail
	DeliveryExactlyOnce Delivery = "exactly_once"  // Kafka transactions; read_committed consumers see each event once
)

// Validate reports a value that is not one of the constants.
func (d Delivery) Validate() error { return oneOf(d, DeliveryAtLeastOnce, DeliveryExactlyOnce) }

// OnUpdate is outbox[].on_update: what an UPDATE of an outbox row does.
type OnUpdate string

const (
	OnUpdateWarn  OnUpdate = "warn"
	OnUpdateError OnUpdate = "error"
	OnUpdateFatal OnUpdate = "fatal"
)

// Validate reports a value that is not one of the constants.
func (o OnUpdate) Validate() error { return oneOf(o, OnUpdateWarn, OnUpdateError, OnUpdateFatal) }

// OnMissingColumn is outbox[].on_missing_column: whether a configured column
// the table lacks stops the relay.
type OnMissingColumn string

const (
	OnMissingColumnError  OnMissingColumn = "error"
	OnMissingColumnIgnore OnMissingColumn = "ignore"
)

// Validate reports a value that is not one of the constants.
func (o OnMissingColumn) Validate() error {
	return oneOf(o, OnMissingColumnError, OnMissingColumnIgnore)
}

// LogLevel is log.level.
type LogLevel string

const (
	LogDebug LogLevel = "debug"
	LogInfo  LogLevel = "info"
	LogWarn  LogLevel = "warn"
	LogError LogLevel = "error"
)

// Validate reports a value that is not one of the constants.
func (l LogLevel) Validate() error { return oneOf(l, LogDebug, LogInfo, LogWarn, LogError) }

// LogFormat is log.format.
type LogFormat string

const (
	LogJSON    LogFormat = "json"
	LogConsole LogFormat = "console" // human-readable, for a terminal
)

// Validate reports a value that is not one of the constants.
func (f LogFormat) Validate() error { return oneOf(f, LogJSON, LogConsole) }

// SnapshotMode is snapshot.mode: whether rows that exist before the slot
// are published.
type SnapshotMode string

const (
	// SnapshotInitial publishes the rows that exist when the slot is
	// created, then streams: a relay started on a busy outbox loses nothing.
	SnapshotInitial SnapshotMode = "initial"
	// SnapshotNever only streams what commits after the slot exists.
	SnapshotNever SnapshotMode = "never"
	// SnapshotInitialOnly publishes the existing rows and exits.
	SnapshotInitialOnly SnapshotMode = "initial_only"
)

// Validate reports a value that is not one of the constants.
func (m SnapshotMode) Validate() error {
	return oneOf(m, SnapshotInitial, SnapshotNever, SnapshotInitialOnly)
}

// oneOf reports v unless it is among allowed, naming them all.
func oneOf[T ~string](v T, allowed ...T) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	list := names[0]
	if n := len(names); n > 1 {
		list = strings.Join(names[:n-1], ", ") + " or " + names[n-1]
	}
	return fmt.Errorf("%q must be %s", string(v), list)
}

// OnSlotLost is postgres.on_slot_lost: what to do when the slot can no
// longer hold every event the relay has not published.
type OnSlotLost string

const (
	SlotLostFail     OnSlotLost = "fail"     // stop and say what may be missing
	SlotLostRecreate OnSlotLost = "recreate" // carry on from what Postgres holds now, naming the gap
)

// Validate reports a value that is not one of the constants.
func (o OnSlotLost) Validate() error { return oneOf(o, SlotLostFail, SlotLostRecreate) }
