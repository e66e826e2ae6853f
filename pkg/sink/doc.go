// Package sink publishes decoded outbox events to Kafka and reports each
// acknowledgement back to the checkpoint tracker.
//
// The producer is configured for the relay's guarantees rather than for
// choice: acks=all, idempotence with one request in flight (so retries cannot
// reorder a partition), and retries for as long as the process lives. Records
// are placed by the Java client's murmur2 partitioner by default so that
// consumers written in Java or Kafka Streams co-partition with the relay. A
// record sarama gives up on ends the run with an error instead of being
// retried here, because re-sending it alone could overtake later events of the
// same key; the pipeline restarts from the slot's confirmed position instead.
// Events that no retry can publish as they are (an illegal topic name, a
// refused topic, a missing partition, an oversized record) follow
// kafka.on_unpublishable instead: the relay stops on them or sends a dead
// letter record in their place (unpublishable.go).
package sink
