package decode

import (
	"strings"
	"testing"
	"time"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput/pgoutputtest"
)

const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func TestParseTrace(t *testing.T) {
	for _, c := range []struct{ in, parent, state string }{
		{tp, tp, ""},
		{"  " + tp + "\n", tp, ""},
		// Debezium's ActivateTracingSpan: java.util.Properties.store output.
		{"#Mon Dec 01 10:00:00 UTC 2026\ntraceparent=" + tp + "\n", tp, ""},
		{"#c\r\ntracestate=congo\\=t61rcWkgMzE,rojo\\=00f067aa0ba902b7\r\ntraceparent=" + tp + "\r\n", tp, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{"traceparent : " + tp, tp, ""},
		{"traceparent=00-0af7651916cd43dd8448eb211c8031\\\n    9c-b7ad6b7169203331-01", tp, ""},
		{"! comment\ntraceparent=" + tp + "\ntracestate=a\\u003db", tp, "a=b"},
		{"", "", ""},
		{"uber-trace-id=abc", "", ""},
		{"00-00000000000000000000000000000000-b7ad6b7169203331-01", "", ""},
		{"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", "", ""},
		{"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "", ""},
		{"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "", ""},
		{tp + "-extra", "", ""},                                  // version 00 has exactly four fields
		{"01" + tp[2:] + "-extra", "01" + tp[2:] + "-extra", ""}, // later versions may add some
	} {
		p, s := parseTrace([]byte(c.in))
		if string(p) != c.parent || string(s) != c.state {
			t.Errorf("parseTrace(%q) = %q, %q; want %q, %q", c.in, p, s, c.parent, c.state)
		}
	}
}

// ceRequired are the attributes CloudEvents 1.0 requires, as Kafka headers
// in binary content mode.
var ceRequired = []string{"ce_specversion", "ce_id", "ce_source", "ce_type"}

func TestDecodeCloudEventsAndTrace(t *testing.T) {
	d, logs := newDecoderLog(t, []config.Message{{Prefix: "outbox", Topic: config.DefaultTopic, CloudEvents: true, CloudEventsSource: "/relay/app/message/outbox"}},
		config.Table{Table: "public.outbox", CloudEvents: true, CloudEventsSource: "/relay/app/public.outbox", TraceColumn: "tracingspancontext"},
		config.Table{Table: "public.plain", TraceColumn: "traceparent"})
	commit := time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC)
	decodeOK(t, d, pgoutputtest.Begin(pgoutput.Begin{FinalLSN: 1, CommitTime: commit.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()}))
	decodeOK(t, d, outboxRelation(1, "public", "outbox", oidJSONB, "tracingspancontext"))
	decodeOK(t, d, outboxRelation(2, "public", "plain", oidBytea, "traceparent"))

	ev := eventOf(t, d, pgoutputtest.Insert(1, []pgoutput.Column{txt("e-1"), txt("Order"), txt("o-1"), txt("OrderCreated"), txt(`{"a":1}`),
		txt("#Mon Dec 01\ntraceparent=" + tp + "\ntracestate=k\\=v\n")}))
	want := map[string]string{
		"id": "e-1", "type": "OrderCreated",
		"ce_specversion": "1.0", "ce_id": "e-1", "ce_source": "/relay/app/public.outbox", "ce_type": "OrderCreated",
		"ce_time": "2026-12-01T10:00:00.123456Z", "ce_subject": "o-1", "content-type": "application/json",
		"traceparent": tp, "tracestate": "k=v",
	}
	if len(ev.Headers) != len(want) {
		t.Errorf("headers %v, want %d", ev.Headers, len(want))
	}
	for k, v := range want {
		if got, ok := header(ev, k); !ok || string(got) != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if string(ev.Value) != `{"a":1}` {
		t.Errorf("value changed: %q", ev.Value)
	}
	if _, err := time.Parse(time.RFC3339, want["ce_time"]); err != nil {
		t.Errorf("ce_time is not RFC 3339: %v", err)
	}

	// No key: no ce_subject; a NULL trace column: no trace headers.
	ev = eventOf(t, d, pgoutputtest.Insert(1, []pgoutput.Column{txt("e-2"), txt("Order"), colNull, txt("T"), colNull, colNull}))
	for _, k := range []string{"ce_subject", "content-type", "traceparent"} {
		if _, ok := header(ev, k); ok {
			t.Errorf("event without key, payload and trace has %s", k)
		}
	}
	for _, k := range ceRequired {
		if _, ok := header(ev, k); !ok {
			t.Errorf("missing required %s", k)
		}
	}
	// ce_type is required: a NULL type stops with a clear error.
	_, err := d.Decode(pgoutputtest.Insert(1, []pgoutput.Column{txt("e-3"), txt("Order"), txt("k"), colNull, txt("{}"), colNull}))
	if err == nil || !strings.Contains(err.Error(), "ce_type") || !strings.Contains(err.Error(), "e-3") {
		t.Errorf("NULL type with cloudevents: %v", err)
	}

	// Without cloudevents: only the trace headers are added; an invalid
	// trace value is dropped with one warning.
	ev = eventOf(t, d, pgoutputtest.Insert(2, []pgoutput.Column{txt("p-1"), txt("Order"), txt("k"), txt("T"), txt(`\x00`), txt(tp)}))
	if got, _ := header(ev, "traceparent"); string(got) != tp || len(ev.Headers) != 3 {
		t.Errorf("plain table headers %v", ev.Headers)
	}
	for range 3 {
		ev = eventOf(t, d, pgoutputtest.Insert(2, []pgoutput.Column{txt("p-2"), txt("Order"), txt("k"), txt("T"), txt(`\x00`), txt("garbage")}))
		if len(ev.Headers) != 2 {
			t.Errorf("invalid trace context published: %v", ev.Headers)
		}
	}
	if n := len(logs.lines("warn", "trace_column", "public.plain")); n != 1 {
		t.Errorf("%d warnings for invalid trace context, want 1", n)
	}

	msg := func(content string) []byte {
		return pgoutputtest.Message(pgoutput.Message{Flags: 1, LSN: 5, Prefix: []byte("outbox"), Content: []byte(content)})
	}
	ev = eventOf(t, d, msg(`{"id":"m-1","aggregatetype":"Order","aggregateid":"o-9","type":"OrderPaid","payload":{"n":1},"headers":{"traceparent":"`+tp+`"}}`))
	for k, v := range map[string]string{"ce_id": "m-1", "ce_source": "/relay/app/message/outbox", "ce_type": "OrderPaid", "ce_subject": "o-9",
		"content-type": "application/json", "traceparent": tp, "ce_specversion": "1.0"} {
		if got, ok := header(ev, k); !ok || string(got) != v {
			t.Errorf("message header %s = %q, want %q", k, got, v)
		}
	}
	ev = eventOf(t, d, msg(`{"id":"m-2","aggregatetype":"Order","type":"T","payload":"plain"}`))
	if got, _ := header(ev, "content-type"); string(got) != "text/plain; charset=utf-8" {
		t.Errorf("string payload content-type %q", got)
	}
}

// FuzzParseTrace: whatever a writer puts in the trace column, parsing it
// neither panics nor returns a traceparent that is not valid.
func FuzzParseTrace(f *testing.F) {
	f.Add([]byte(tp))
	f.Add([]byte("#x\ntraceparent=" + tp + "\ntracestate=a\\=b\\u00e9\\\n c\r\n"))
	f.Add([]byte("traceparent\\"))
	f.Add([]byte("\\u12"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, s := parseTrace(b)
		if p != nil && !validTraceparent(p) {
			t.Fatalf("invalid traceparent %q returned", p)
		}
		if p == nil && s != nil {
			t.Fatal("tracestate without traceparent")
		}
	})
}
