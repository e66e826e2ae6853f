package sink

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

type murmurCase struct {
	key  []byte
	want int32
}

func str(s string) []byte { return []byte(s) }

var murmur2Cases = []murmurCase{
	// Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
	// testMurmur2 (the expected values of the Java implementation itself).
	{str("21"), -973932308},
	{str("foobar"), -790332482},
	{str("a-little-bit-long-string"), -985981536},
	{str("a-little-bit-longer-string"), -1486304829},
	{str("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971},
	{[]byte{'a', 'b', 'c'}, 479470107},

	// librdkafka, src/rdmurmur2.c, unittest_murmur2 ("java_murmur2_results",
	// written there as uint32 hex; here as the Java int): "1234" and its
	// suffixes cover tails of 0, 3, 2 and 1 bytes.
	{str("kafka"), -798503068},                                  // 0xd067cf64
	{str("giberish123456789"), -1890243828},                     // 0x8f552b0c
	{str("1234"), -1614185708},                                  // 0x9fc97b14
	{str("234"), -406844982},                                    // 0xe7c009ca
	{str("34"), -2026295078},                                    // 0x873930da
	{str("4"), 1514888353},                                      // 0x5a4b5ca1
	{str("PreAmbleWillBeRemoved,ThePrePartThatIs"), 2017611548}, // 0x78424f1c
	{str("reAmbleWillBeRemoved,ThePrePartThatIs"), 1247982455},  // 0x4a62b377
	{str("eAmbleWillBeRemoved,ThePrePartThatIs"), -521871202},   // 0xe0e4e09e
	{str("AmbleWillBeRemoved,ThePrePartThatIs"), 1656271935},    // 0x62b8b43f
	{str(""), 275646681},                                        // 0x106e08d9
	{nil, 275646681},

	// No published suite has bytes >= 0x80, where a port that sign-extends
	// (Java's byte is signed; Utils.murmur2 masks every byte with 0xff) goes
	// wrong. These values, and the lengths 0..9 below, were computed on a JVM
	// (OpenJDK) by Utils.murmur2 transcribed verbatim from Kafka's Utils.java,
	// which in the same run reproduced every value above.
	{str("a"), -1563381124},
	{str("ab"), 316155434},
	{str("abcd"), -1323649548},
	{str("abcde"), 461995741},
	{str("abcdef"), 1870650108},
	{str("abcdefg"), -346467175},
	{str("abcdefgh"), -955427363},
	{str("abcdefghi"), -619679810},
	{[]byte{0x00}, 375494588},
	{[]byte{0x00, 0x00, 0x00, 0x00}, 850957120},
	{[]byte{0x80}, 857690492},
	{[]byte{0xff}, -311467685},
	{[]byte{0xff, 0xfe}, 1717632651},
	{[]byte{0x80, 0x81, 0x82}, -1975640061},
	{[]byte{0xff, 0xff, 0xff, 0xff}, 644171429},
	{[]byte{0x80, 0x81, 0x82, 0x83, 0x84}, -1665622439},
	{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, -71293549},
	{[]byte{'a', 0xff, 'b', 0x80, 'c', 0xfe}, 1075088757},
	{str("é"), 186971271},
	{str("日本語"), 1431860170},
	{str("Zoë-Müller"), 1193431583},
}

// partitionOf places key with the relay's partitioner among n partitions.
func partitionOf(t testing.TB, enc sarama.Encoder, n int32) int32 {
	t.Helper()
	got, err := newMurmur2Partitioner("t").Partition(&sarama.ProducerMessage{Key: enc}, n)
	if err != nil {
		t.Fatalf("Partition(%T, %d): %v", enc, n, err)
	}
	return got
}

// encoders are the key types the partitioner may see, the relay's own
// (*sarama.ByteEncoder) first.
func encoders(key []byte) []sarama.Encoder {
	b := sarama.ByteEncoder(key)
	return []sarama.Encoder{&b, b, sarama.StringEncoder(key), otherEncoder(key)}
}

// TestMurmur2JavaVectors pins the partitioner to the Java client's murmur2
// values. With math.MaxInt32 partitions the partition is the hash's low 31
// bits (the sign bit is masked off before the modulo), which is every bit a
// partition choice depends on.
func TestMurmur2JavaVectors(t *testing.T) {
	for _, c := range murmur2Cases {
		key := c.key
		if key == nil {
			// A nil key is a null key, which is not hashed; the vector is
			// the hash of zero bytes.
			key = []byte{}
		}
		want := int32(uint32(c.want)&0x7fffffff) % math.MaxInt32
		for _, enc := range encoders(key) {
			if got := partitionOf(t, enc, math.MaxInt32); got != want {
				t.Errorf("murmur2(%q) & 0x7fffffff via %T = %d, want %d (Java: %d)", c.key, enc, got, want, c.want)
			}
		}
	}
}

func TestJavaPartition(t *testing.T) {
	cases := []struct {
		key  string
		n    int32
		want int32
	}{
		{"foobar", 50, 16}, // toPositive(-790332482) % 50
		{"21", 50, 40},     // toPositive(-973932308) % 50
		{"abc", 7, 4},      // 479470107 % 7
		{"", 50, 31},       // 275646681 % 50
		{"日本語", 7, 6},      // 1431860170 % 7
		{"\xff", 50, 13},   // toPositive(-311467685) % 50
		{"kafka", 1, 0},
	}
	for _, c := range cases {
		if got := partitionOf(t, sarama.ByteEncoder(c.key), c.n); got != c.want {
			t.Errorf("partition(%q, %d) = %d, want %d", c.key, c.n, got, c.want)
		}
	}
	// The sign bit is masked, not negated (Utils.toPositive, not Math.abs).
	for _, c := range murmur2Cases {
		if c.key == nil {
			continue
		}
		for _, n := range []int32{1, 3, 7, 12, 50, 1000} {
			want := int32(uint32(c.want)&0x7fffffff) % n
			if got := partitionOf(t, sarama.ByteEncoder(c.key), n); got != want || got < 0 || got >= n {
				t.Fatalf("partition(%q, %d) = %d, want %d", c.key, n, got, want)
			}
		}
	}
}

type failingEncoder struct{}

func (failingEncoder) Encode() ([]byte, error) { return nil, errors.New("boom") }
func (failingEncoder) Length() int             { return 0 }

type nilEncoder struct{}

func (nilEncoder) Encode() ([]byte, error) { return nil, nil }
func (nilEncoder) Length() int             { return 0 }

type otherEncoder []byte

func (e otherEncoder) Encode() ([]byte, error) { return e, nil }
func (e otherEncoder) Length() int             { return len(e) }

// TestMurmur2PartitionerMatchesFranzGo cross-checks the placement with an
// independent implementation of the Java client's partitioner, franz-go's.
func TestMurmur2PartitionerMatchesFranzGo(t *testing.T) {
	var ctor sarama.PartitionerConstructor = newMurmur2Partitioner
	p := ctor("orders")
	if !p.RequiresConsistency() {
		t.Fatal("RequiresConsistency() = false, want true")
	}
	ref := kgo.StickyKeyPartitioner(nil).ForTopic("orders")
	for i := 0; i < 2000; i++ {
		key := []byte(fmt.Sprintf("order-%d-\xe2\x82\xac%c", i, byte(i)))
		for _, n := range []int32{1, 2, 3, 6, 12, 50, 97} {
			want := int32(ref.Partition(&kgo.Record{Key: key}, int(n)))
			for _, enc := range encoders(key) {
				got, err := p.Partition(&sarama.ProducerMessage{Key: enc}, n)
				if err != nil || got != want {
					t.Fatalf("Partition(%T %q, %d) = %d, %v; franz-go puts it on %d", enc, key, n, got, err, want)
				}
			}
		}
	}
	// Empty (non-nil) keys are hashed like the Java client hashes byte[0].
	for _, enc := range encoders([]byte{}) {
		if got, err := p.Partition(&sarama.ProducerMessage{Key: enc}, 50); err != nil || got != 31 {
			t.Errorf("Partition(empty %T, 50) = %d, %v; want 31", enc, got, err)
		}
	}
}

func TestMurmur2PartitionerNilKeySpreads(t *testing.T) {
	p := newMurmur2Partitioner("t")
	const n = 6
	for _, key := range []sarama.Encoder{nil, sarama.ByteEncoder(nil), nilEncoder{}} {
		counts := make([]int, n)
		for i := 0; i < 60; i++ {
			got, err := p.Partition(&sarama.ProducerMessage{Key: key}, n)
			if err != nil {
				t.Fatal(err)
			}
			if got < 0 || got >= n {
				t.Fatalf("partition %d out of range", got)
			}
			counts[got]++
		}
		for i, c := range counts {
			// 10 each; 9..11 should the uint32 counter wrap mid-run.
			if c < 9 || c > 11 {
				t.Errorf("key %#v: partition %d got %d of 60 messages, want 10 (round-robin): %v", key, i, c, counts)
				break
			}
		}
	}
}

func TestMurmur2PartitionerErrors(t *testing.T) {
	p := newMurmur2Partitioner("t")
	if _, err := p.Partition(&sarama.ProducerMessage{Key: failingEncoder{}}, 3); err == nil {
		t.Error("encoder error not returned")
	}
	for _, n := range []int32{0, -1} {
		if _, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder("k")}, n); err == nil {
			t.Errorf("numPartitions %d: no error", n)
		}
		if _, err := p.Partition(&sarama.ProducerMessage{}, n); err == nil {
			t.Errorf("numPartitions %d, nil key: no error", n)
		}
	}
}

func TestMurmur2PartitionerAllocs(t *testing.T) {
	p := newMurmur2Partitioner("t")
	key := sarama.ByteEncoder("5f0c3f9e-8a4b-4c1e-9d2a-7b6e5f4d3c2b")
	// The key types the relay's records use; sarama's partitioner encodes
	// other encoders (a StringEncoder copies its string) before hashing.
	msgs := []*sarama.ProducerMessage{{Key: &key}, {Key: key}, {}}
	for _, msg := range msgs {
		if a := testing.AllocsPerRun(1000, func() { _, _ = p.Partition(msg, 12) }); a != 0 {
			t.Errorf("Partition(%T) allocates %v times, want 0", msg.Key, a)
		}
	}
}

func BenchmarkMurmur2(b *testing.B) {
	p := newMurmur2Partitioner("t")
	for _, size := range []int{36, 256} {
		key := make(sarama.ByteEncoder, size)
		for i := range key {
			key[i] = byte(i*31 + 7)
		}
		msg := &sarama.ProducerMessage{Key: &key}
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var sink int32
			for b.Loop() {
				n, _ := p.Partition(msg, 12)
				sink += n
			}
			_ = sink
		})
	}
}
