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

// Murmur2 is Kafka's Java client murmur2 (org.apache.kafka.common.utils.Utils.murmur2, seed 0x9747b28c) over data.
func Murmur2(data []byte) int32 { return int32(murmur2(data)) }

// JavaPartition returns the partition the Java client's default partitioner picks for a non-null key: (murmur2(key) & 0x7fffffff) % numPartitions.
// numPartitions must be positive.
func JavaPartition(key []byte, numPartitions int32) int32 {
	return javaPartition(murmur2(key), numPartitions)
}

func javaPartition(h uint32, numPartitions int32) int32 {
	return int32(h&0x7fffffff) % numPartitions
}

// murmur2 is MurmurHash2 as the Java client computes it: 4-byte little-endian
// blocks, tail bytes taken unsigned (Java masks each byte with 0xff, so bytes
// >= 0x80 are not sign-extended), arithmetic modulo 2^32.
func murmur2[T string | []byte](data T) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(data)
	h := uint32(seed) ^ uint32(n)
	i := 0
	for ; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch n - i {
	case 3:
		h ^= uint32(data[i+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[i+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[i])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// NewMurmur2Partitioner is a sarama.PartitionerConstructor that places keyed messages as the Java client does; messages with a nil key go round-robin.
//
// A key whose encoding is nil (a nil msg.Key, or e.g. sarama.ByteEncoder(nil))
// is sent as a null key, so it is treated as unkeyed; an empty non-nil key is
// hashed, as the Java client hashes an empty byte array.
func NewMurmur2Partitioner(topic string) sarama.Partitioner {
	p := &murmur2Partitioner{}
	// Start the round-robin at a random partition so that many short-lived
	// producers do not all begin on partition 0.
	p.next.Store(rand.Uint32())
	return p
}

type murmur2Partitioner struct {
	next atomic.Uint32 // round-robin counter for unkeyed messages
}

var errNoPartitions = errors.New("murmur2 partitioner: topic has no partitions")

// Partition implements sarama.Partitioner.
func (p *murmur2Partitioner) Partition(msg *sarama.ProducerMessage, numPartitions int32) (int32, error) {
	if numPartitions <= 0 {
		return -1, errNoPartitions
	}
	var h uint32
	switch k := msg.Key.(type) {
	case nil:
		return p.roundRobin(numPartitions), nil
	case sarama.ByteEncoder:
		if k == nil {
			return p.roundRobin(numPartitions), nil
		}
		h = murmur2([]byte(k))
	case *sarama.ByteEncoder: // how the relay's own records carry keys
		if k == nil || *k == nil {
			return p.roundRobin(numPartitions), nil
		}
		h = murmur2([]byte(*k))
	case sarama.StringEncoder:
		h = murmur2(string(k))
	default:
		key, err := k.Encode()
		if err != nil {
			return -1, err
		}
		if key == nil {
			return p.roundRobin(numPartitions), nil
		}
		h = murmur2(key)
	}
	return javaPartition(h, numPartitions), nil
}

func (p *murmur2Partitioner) roundRobin(numPartitions int32) int32 {
	return int32((p.next.Add(1) - 1) % uint32(numPartitions))
}

// RequiresConsistency implements sarama.Partitioner: a keyed message must go
// to the partition its key hashes to, even while that partition is
// unavailable.
func (p *murmur2Partitioner) RequiresConsistency() bool { return true }
