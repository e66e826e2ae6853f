package config

import "time"

// This file is the one place where defaults are stated. Load starts from
// Default() and lets the file and the environment override what they set;
// every entry of outbox and messages starts from DefaultTable or
// DefaultMessage in the same way. To add a key with a default, add the field
// to its section type and its value here: the environment variable
// (RELAY_<SECTION>_<KEY>) and the decoding follow from the field's tag.

// DefaultTopic is Debezium's default route: outbox.event.<aggregatetype>.
const DefaultTopic = "outbox.event.${routedByValue}"

// DefaultOutboxTable is the table relayed when neither outbox nor messages
// is configured.
const DefaultOutboxTable = "public.outbox"

// Default returns the configuration used for every key a user leaves unset.
func Default() Config {
	return Config{
		Postgres: Postgres{
			Slot:              "outbox_relay",
			Publication:       "outbox_relay",
			CreatePublication: true,
			CreateSlot:        true,
			SlotFailover:      false,
			OnSlotLost:        SlotLostFail,
		},
		Kafka: Kafka{
			ClientID:        "relay",
			Version:         "2.8.0",
			Partitioner:     PartitionerMurmur2,
			Compression:     CompressionNone,
			MaxMessageBytes: 1000000,
			Linger:          0,
			ProgressTopic:   "relay.progress",
			Delivery:        DeliveryAtLeastOnce,
			// OnUnpublishable and its deprecated name Oversized stay empty:
			// empty is how an explicit choice is told apart, so that the two
			// can be checked against each other; Kafka.Unpublishable gives
			// stop when neither is set.
		},
		Pipeline: Pipeline{
			MaxInflightEvents: 50000,
			MaxInflightBytes:  16 << 20,
			DrainTimeout:      30 * time.Second,
			StatusInterval:    time.Second,
			MaxBackoff:        30 * time.Second,
			StallTimeout:      5 * time.Minute,

			TransactionInterval:  100 * time.Millisecond,
			TransactionMaxEvents: 20000,
			TransactionMaxBytes:  32 << 20,
		},
		Snapshot: Snapshot{Mode: SnapshotInitial, BatchSize: 10000},
		Log:      Log{Level: LogInfo, Format: LogJSON},
	}
}

// DefaultTable returns the mapping of an outbox entry for every key it
// leaves unset: the defaults of Debezium's Outbox Event Router.
func DefaultTable(name string) Table {
	return Table{
		Table: name,
		Columns: Columns{
			ID: "id", Key: "aggregateid", Payload: "payload", RouteBy: "aggregatetype", Type: "type",
		},
		Topic:           DefaultTopic,
		OnUpdate:        OnUpdateWarn,
		OnMissingColumn: OnMissingColumnError,
	}
}

// DefaultMessage returns the routing of a messages entry for every key it
// leaves unset.
func DefaultMessage(prefix string) Message {
	return Message{Prefix: prefix, Topic: DefaultTopic}
}
