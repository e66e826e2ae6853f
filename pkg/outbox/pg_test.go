package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
	"github.com/relay-dev/relay/pkg/outbox"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

type row struct {
	id, aggType, aggID, typ, payload string
	trace                            *string
}

func readRows(t *testing.T, conn *pgx.Conn, table string) map[string]row {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT id::text, aggregatetype, aggregateid, type, payload::text, traceparent FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]row{}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.aggType, &r.aggID, &r.typ, &r.payload, &r.trace); err != nil {
			t.Fatal(err)
		}
		out[r.id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPostgres writes through pgx and database/sql into a plain and a
// partitioned table, and checks that a rolled-back transaction leaves no
// event.
func TestPostgres(t *testing.T) {
	pg := devenvtest.Postgres(t, devenv.PostgresOptions{})
	ctx := context.Background()
	conn := connect(t, pg.SuperURL())
	db, err := sql.Open("pgx", pg.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	plain, err := outbox.New(outbox.Table{Name: "public.outbox", TraceColumn: "traceparent"})
	if err != nil {
		t.Fatal(err)
	}
	parted, err := outbox.New(outbox.Table{Name: "public.outbox_parted", TraceColumn: "traceparent"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Hour)
	for _, ddl := range []string{plain.CreateTable(), plain.CreateTable(), parted.CreatePartitionedTable(),
		parted.CreatePartition(now.Add(-time.Hour), now.Add(2*time.Hour))} {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			t.Fatalf("%s: %v", ddl, err)
		}
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, tc := range []struct {
		name  string
		w     *outbox.Writer
		table string
	}{{"plain", plain, "public.outbox"}, {"partitioned", parted, "public.outbox_parted"}} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			idPgx, err := tc.w.Write(ctx, outbox.Pgx(tx), outbox.Event{AggregateType: "Order", AggregateID: "1", Type: "OrderCreated", Payload: []byte(`{"n": 1}`), TraceParent: tp})
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}

			stx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			idSQL, err := tc.w.Write(ctx, outbox.SQL(stx), outbox.Event{AggregateType: "Order", AggregateID: "2", Type: "OrderPaid", Payload: []byte(`"text"`)})
			if err != nil {
				t.Fatal(err)
			}
			if err := stx.Commit(); err != nil {
				t.Fatal(err)
			}

			rtx, _ := conn.Begin(ctx)
			idGone, err := tc.w.Write(ctx, outbox.Pgx(rtx), outbox.Event{AggregateType: "Order", AggregateID: "3", Type: "X", Payload: []byte(`{}`)})
			if err != nil {
				t.Fatal(err)
			}
			_ = rtx.Rollback(ctx)

			rows := readRows(t, conn, tc.table)
			if len(rows) != 2 {
				t.Fatalf("%d rows, want 2: %v", len(rows), rows)
			}
			if _, ok := rows[idGone.String()]; ok {
				t.Error("rolled-back event is in the table")
			}
			r := rows[idPgx.String()]
			if r.aggType != "Order" || r.aggID != "1" || r.typ != "OrderCreated" || r.payload != `{"n": 1}` || r.trace == nil || *r.trace != tp {
				t.Errorf("pgx row %+v", r)
			}
			r = rows[idSQL.String()]
			if r.aggID != "2" || r.typ != "OrderPaid" || r.payload != `"text"` || r.trace != nil {
				t.Errorf("database/sql row %+v", r)
			}
			if idPgx.Version() != 7 || idSQL.Version() != 7 {
				t.Errorf("ids %s %s are not UUIDv7", idPgx, idSQL)
			}
		})
	}
}

// TestEmit checks the logical message a committed Emit writes, and that a
// rolled-back one writes nothing, with test_decoding as an independent
// decoder.
func TestEmit(t *testing.T) {
	pg := devenvtest.Postgres(t, devenv.PostgresOptions{})
	ctx := context.Background()
	conn := connect(t, pg.SuperURL())
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('t', 'test_decoding')"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", pg.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	tx, _ := conn.Begin(ctx)
	id, err := outbox.Emit(ctx, outbox.Pgx(tx), "", outbox.Event{AggregateType: "Order", AggregateID: "7", Type: "OrderShipped", Payload: []byte(`{"n":7}`), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	stx, _ := db.BeginTx(ctx, nil)
	if _, err := outbox.Emit(ctx, outbox.SQL(stx), "", outbox.Event{AggregateType: "Order", Type: "Gone"}); err != nil {
		t.Fatal(err)
	}
	_ = stx.Rollback()

	rows, err := conn.Query(ctx, "SELECT data FROM pg_logical_slot_get_changes('t', NULL, NULL) WHERE data LIKE 'message:%'")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1: %q", len(msgs), msgs)
	}
	// message: transactional: 1 prefix: outbox, sz: N content:{...}
	m := msgs[0]
	if !strings.Contains(m, "transactional: 1 prefix: outbox,") {
		t.Errorf("message %q", m)
	}
	_, content, _ := strings.Cut(m, "content:")
	var env struct {
		ID, AggregateType, AggregateID, Type string
		Payload                              json.RawMessage
		Headers                              map[string]string
	}
	if err := json.Unmarshal([]byte(content), &env); err != nil {
		t.Fatalf("content %q: %v", content, err)
	}
	if uuid.MustParse(env.ID) != id || env.AggregateType != "Order" || env.AggregateID != "7" || env.Type != "OrderShipped" ||
		string(env.Payload) != `{"n":7}` || env.Headers["traceparent"] == "" {
		t.Errorf("envelope %+v", env)
	}
}
