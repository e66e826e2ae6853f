package outbox

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// recorder is an Execer that keeps what it was asked to run.
type recorder struct {
	sql  string
	args []any
}

func (r *recorder) Exec(_ context.Context, sql string, args ...any) error {
	r.sql, r.args = sql, args
	return nil
}

func TestWriteDefaultLayout(t *testing.T) {
	w, err := New(Table{})
	if err != nil {
		t.Fatal(err)
	}
	var r recorder
	id, err := w.Write(context.Background(), &r, Event{AggregateType: "Order", AggregateID: "42", Type: "OrderCreated", Payload: []byte(`{"total":3}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `INSERT INTO "public"."outbox" ("id", "aggregatetype", "aggregateid", "type", "payload") VALUES ($1, $2, $3, $4, $5)`
	if r.sql != want {
		t.Errorf("sql\n got %s\nwant %s", r.sql, want)
	}
	if id.Version() != 7 {
		t.Errorf("default id %s is version %d, want 7", id, id.Version())
	}
	if r.args[0] != id.String() || r.args[1] != "Order" || r.args[2] != "42" || r.args[3] != "OrderCreated" || r.args[4] != `{"total":3}` {
		t.Errorf("args %v", r.args)
	}
}

func TestWriteMappedColumnsExtraAndTrace(t *testing.T) {
	w, err := New(Table{
		Name:        `app."Order Events"`,
		Columns:     Columns{ID: "event_id", Key: "agg_id", Payload: "body", RouteBy: "agg_type", Type: "event_type", Timestamp: "occurred_at"},
		TraceColumn: "tracingspancontext",
	})
	if err != nil {
		t.Fatal(err)
	}
	var r recorder
	given := uuid.MustParse("0191e3a4-0000-7000-8000-000000000001")
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, err = w.Write(context.Background(), &r, Event{
		ID: given, AggregateType: "Order", Type: "X", Timestamp: ts,
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "vendor=1",
		Extra: map[string]any{"tenant": "acme", "shard": 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `INSERT INTO "app"."Order Events" ("event_id", "agg_type", "agg_id", "event_type", "body", "occurred_at", "tracingspancontext", "shard", "tenant") VALUES ($1, $2, $3, $4, $5, COALESCE($6::timestamptz, now()), $7, $8, $9)`
	if r.sql != want {
		t.Errorf("sql\n got %s\nwant %s", r.sql, want)
	}
	if r.args[0] != given.String() || r.args[4] != nil || r.args[5] != ts || r.args[7] != 2 || r.args[8] != "acme" {
		t.Errorf("args %v", r.args)
	}
	if got := r.args[6]; got != "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\ntracestate=vendor=1\n" {
		t.Errorf("trace column %q", got)
	}
	if _, err := w.Write(context.Background(), &r, Event{AggregateType: "Order", Extra: map[string]any{"body": 1}}); err == nil {
		t.Error("Extra overriding a mapped column was accepted")
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []Table{
		{Name: "a.b.c"},
		{Name: "bad name"},
		{Name: `"unterminated`},
		{Name: "x.", Columns: Columns{}},
		{Columns: Columns{ID: "payload"}},
		{TraceColumn: "type"},
	} {
		if _, err := New(tc); err == nil {
			t.Errorf("New(%+v) accepted", tc)
		}
	}
}

func TestTraceArg(t *testing.T) {
	if traceArg("", "x") != nil {
		t.Error("no traceparent should write NULL")
	}
	if got := traceArg("00-a-b-01", ""); got != "00-a-b-01" {
		t.Errorf("plain traceparent: %q", got)
	}
}

func TestEnvelope(t *testing.T) {
	id := uuid.MustParse("0191e3a4-0000-7000-8000-000000000001")
	for _, tc := range []struct {
		payload []byte
		want    string
	}{
		{[]byte(`{"a": 1}`), `{"a":1}`},
		{[]byte(`plain text`), `"plain text"`},
		{nil, `null`},
	} {
		b, err := encodeEnvelope(id, Event{AggregateType: "Order", AggregateID: "1", Type: "T", Payload: tc.payload,
			TraceParent: "00-x-y-01", Extra: map[string]any{"tenant": "acme", "n": 3}})
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]json.RawMessage
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		if string(env["payload"]) != tc.want {
			t.Errorf("payload %q: got %s, want %s", tc.payload, env["payload"], tc.want)
		}
		if string(env["id"]) != `"`+id.String()+`"` || string(env["aggregatetype"]) != `"Order"` {
			t.Errorf("envelope %s", b)
		}
		if h := string(env["headers"]); !strings.Contains(h, `"traceparent":"00-x-y-01"`) || !strings.Contains(h, `"n":3`) || !strings.Contains(h, `"tenant":"acme"`) {
			t.Errorf("headers %s", h)
		}
	}
	if _, err := Emit(context.Background(), &recorder{}, "", Event{Type: "T"}); err == nil {
		t.Error("Emit without AggregateType accepted")
	}
}

func TestDDL(t *testing.T) {
	w, _ := New(Table{TraceColumn: "traceparent"})
	got := w.CreatePartitionedTable()
	for _, s := range []string{`"traceparent" text`, `PRIMARY KEY ("id", "created_at")`, `PARTITION BY RANGE ("created_at")`} {
		if !strings.Contains(got, s) {
			t.Errorf("partitioned DDL lacks %s:\n%s", s, got)
		}
	}
	p := w.CreatePartition(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	want := `CREATE TABLE IF NOT EXISTS "public"."outbox_p2026120100" PARTITION OF "public"."outbox" FOR VALUES FROM ('2026-12-01T00:00:00Z') TO ('2026-12-02T00:00:00Z')`
	if p != want {
		t.Errorf("partition\n got %s\nwant %s", p, want)
	}
}
