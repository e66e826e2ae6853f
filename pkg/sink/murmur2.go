// murmur2.go places keyed records on the partition the Apache Kafka Java
// client's default partitioner would pick, so that keys written by relay and
// by Java producers (Kafka Streams, Connect, Debezium...) land together.

package sink

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"

	"github.com/IBM/sarama"
)

// newMurmur2Partitioner is a sarama.PartitionerConstructor that places keyed
// messages as the Java client does, (murmur2(key) & 0x7fffffff) % partitions,
// with sarama's own murmur2 partitioner doing the hashing. Around it, it
// treats a key that encodes to nil (a nil msg.Key, or e.g.
// sarama.ByteEncoder(nil)) as what sarama sends it as, a null key, and
// spreads those round-robin: sarama's partitioner would hash such a key like
// an empty one and put every null-keyed record on one partition. An empty
// non-nil key is hashed, as the Java client hashes an empty byte array.
func newMurmur2Partitioner(topic string) sarama.Partitioner {
	p := &murmur2Partitioner{hashed: sarama.NewMurmur2Partitioner(topic)}
	// Start the round-robin at a random partition so that many short-lived
	// producers do not all begin on partition 0.
	p.next.Store(rand.Uint32()) //nolint:gosec // G404: spreads load, guards no secret
	return p
}

type murmur2Partitioner struct {
	hashed sarama.Partitioner
	next   atomic.Uint32 // round-robin counter for unkeyed messages
}

var errNoPartitions = errors.New("murmur2 partitioner: topic has no partitions")

// Partition implements sarama.Partitioner.
func (p *murmur2Partitioner) Partition(msg *sarama.ProducerMessage, numPartitions int32) (int32, error) {
	if numPartitions <= 0 {
		// sarama never asks with none, but a modulo by zero would panic.
		return -1, errNoPartitions
	}
	switch k := msg.Key.(type) {
	case nil:
		return p.roundRobin(numPartitions), nil
	case *sarama.ByteEncoder: // how the relay's own records carry keys
		if k == nil || *k == nil {
			return p.roundRobin(numPartitions), nil
		}
	case sarama.ByteEncoder:
		if k == nil {
			return p.roundRobin(numPartitions), nil
		}
	case sarama.StringEncoder:
	default:
		key, err := k.Encode()
		if err != nil {
			return -1, err
		}
		if key == nil {
			return p.roundRobin(numPartitions), nil
		}
	}
	return p.hashed.Partition(msg, numPartitions)
}

func (p *murmur2Partitioner) roundRobin(numPartitions int32) int32 {
	return int32((p.next.Add(1) - 1) % uint32(numPartitions)) //nolint:gosec // G115: sarama passes numPartitions > 0, so the result is below it
}

// RequiresConsistency implements sarama.Partitioner: a keyed message must go
// to the partition its key hashes to, even while that partition is
// unavailable.
func (p *murmur2Partitioner) RequiresConsistency() bool { return true }
