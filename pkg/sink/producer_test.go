package sink

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/relay-dev/relay/pkg/decode"
)

func benchEvent() *decode.Event {
	return &decode.Event{
		Table: "public.outbox", Topic: "outbox.event.Order", Key: []byte("order-123"),
		Value:     []byte(`{"orderId":"order-123","customer":"c-42","total":129.95,"currency":"EUR","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"padding to ~200 bytes"}`),
		ID:        "8f1c6a3e-7f0a-4d2b-9a51-3c0f5c2b9e11",
		Headers:   []decode.Header{{Key: "id", Value: []byte("8f1c6a3e-7f0a-4d2b-9a51-3c0f5c2b9e11")}, {Key: "type", Value: []byte("OrderCreated")}},
		Partition: -1,
	}
}

// TestNewItemPartitionsAsJava checks records built for the producer still land
// on the Java client's partition for their key.
func TestNewItemPartitionsAsJava(t *testing.T) {
	ev := benchEvent()
	it := newItem(ev, time.Now())
	p := explicitOr(newMurmur2Partitioner)("outbox.event.Order")
	want := int32(kgo.StickyKeyPartitioner(nil).ForTopic(ev.Topic).Partition(&kgo.Record{Key: ev.Key}, 12))
	got, err := p.Partition(&it.msg, 12)
	if err != nil || got != want {
		t.Fatalf("partition %d, %v; want %d (franz-go's Java-compatible partitioner)", got, err, want)
	}
	k, _ := it.msg.Key.Encode()
	v, _ := it.msg.Value.Encode()
	if string(k) != "order-123" || string(v) != string(ev.Value) || len(it.msg.Headers) != 2 || string(it.msg.Headers[0].Key) != "id" {
		t.Fatalf("message %+v", it.msg)
	}
	ev.Partition = 5
	if got, _ := p.Partition(&newItem(ev, time.Now()).msg, 12); got != 5 {
		t.Fatalf("explicit partition ignored: %d", got)
	}
}

// BenchmarkBuildRecord measures turning a decoded event into the producer's
// message and choosing its partition: one allocation, the item itself.
func BenchmarkBuildRecord(b *testing.B) {
	ev := benchEvent()
	p := explicitOr(newMurmur2Partitioner)("outbox.event.Order")
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		it := newItem(ev, now)
		if _, err := p.Partition(&it.msg, 12); err != nil {
			b.Fatal(err)
		}
	}
}
