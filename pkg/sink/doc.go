// Package sink publishes decoded outbox events to Kafka and reports each
// acknowledgement back to the checkpoint tracker.
//
// The at-least-once Producer writes its own produce requests (wire.go) on
// connections that sarama opens and authenticates, and takes leaders from
// sarama's client: one goroutine owns a queue per partition and keeps one
// request in flight per broker (acks=all), so a partition's batches reach
// Kafka in the order the events were handed over, and whatever arrives while
// a request is in flight goes in the next one. A batch the
// broker refuses for now (a leader moving, too few replicas, a broken
// connection) is sent again before anything later of its partition; one
// refused for good, or for longer than 30 seconds, ends the run with an error
// before anything later of its partition is sent, and the pipeline restarts
// from the confirmed position. Sending again can repeat records, never
// reorder them.
//
// The exactly-once TxnProducer uses sarama's transactional AsyncProducer:
// each Kafka transaction ends with the progress record that makes its events
// durable. ProgressStore keeps the progress records of at-least-once runs
// in a compacted topic and reads them back at start-up.
//
// Records are placed by the Java client's murmur2 partitioner by default so
// that consumers written in Java or Kafka Streams co-partition with the
// relay. Events that no retry can publish as they are (an illegal topic
// name, a refused topic, a missing partition, an oversized record) follow
// kafka.on_unpublishable instead: the relay stops on them or sends a dead
// letter record in their place (unpublishable.go).
package sink
