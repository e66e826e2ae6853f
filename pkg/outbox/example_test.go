package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/pkg/outbox"
)

// A service places an order: the order row and its OrderCreated event commit
// together or not at all. The relay publishes the event to
// outbox.event.Order with key "42" once the transaction commits.
func Example() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	events, err := outbox.New(outbox.Table{}) // public.outbox, Debezium's layout
	if err != nil {
		panic(err)
	}

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, customer, total) VALUES ($1, $2, $3)", 42, "c-7", 1999); err != nil {
			return err
		}
		payload, _ := json.Marshal(map[string]any{"id": 42, "customer": "c-7", "total": 1999})
		_, err := events.Write(ctx, outbox.Pgx(tx), outbox.Event{
			AggregateType: "Order",
			AggregateID:   "42",
			Type:          "OrderCreated",
			Payload:       payload,
		})
		return err
	})
	if err != nil {
		fmt.Println("order not placed:", err)
	}
}

// The same with database/sql (here through pgx's stdlib driver).
func ExampleSQL() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		return
	}
	defer db.Close()
	events, _ := outbox.New(outbox.Table{})

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return
	}
	defer tx.Rollback() // no-op after Commit
	if _, err := tx.ExecContext(ctx, "UPDATE orders SET status = 'paid' WHERE id = $1", 42); err != nil {
		return
	}
	if _, err := events.Write(ctx, outbox.SQL(tx), outbox.Event{
		AggregateType: "Order", AggregateID: "42", Type: "OrderPaid", Payload: []byte(`{"id": 42}`),
	}); err != nil {
		return
	}
	_ = tx.Commit()
}

// The table-free outbox: the event goes into the WAL as a transactional
// logical message, relayed when the relay's messages list the prefix.
func ExampleEmit() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_ = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE orders SET status = 'shipped' WHERE id = $1", 42); err != nil {
			return err
		}
		_, err := outbox.Emit(ctx, outbox.Pgx(tx), outbox.DefaultPrefix, outbox.Event{
			AggregateType: "Order", AggregateID: "42", Type: "OrderShipped", Payload: []byte(`{"id": 42}`),
			// From the active span, so the consumer's span joins the trace.
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		})
		return err
	})
}

func ExampleWriter_CreateTable() {
	w, _ := outbox.New(outbox.Table{})
	fmt.Println(w.CreateTable())
	// Output:
	// CREATE TABLE IF NOT EXISTS "public"."outbox" (
	// 	"id" uuid NOT NULL,
	// 	"aggregatetype" text NOT NULL,
	// 	"aggregateid" text,
	// 	"type" text,
	// 	"payload" jsonb,
	// 	"created_at" timestamptz NOT NULL DEFAULT now(),
	// 	PRIMARY KEY ("id")
	// )
}

// Partitioned by day: retention drops whole partitions instead of deleting
// rows.
func ExampleWriter_CreatePartitionedTable() {
	w, _ := outbox.New(outbox.Table{Name: "app.outbox", TraceColumn: "traceparent"})
	fmt.Println(w.CreatePartitionedTable())
	day := func(d int) time.Time { return time.Date(2026, 12, d, 0, 0, 0, 0, time.UTC) }
	fmt.Println(w.CreatePartition(day(1), day(2)))
	// Output:
	// CREATE TABLE IF NOT EXISTS "app"."outbox" (
	// 	"id" uuid NOT NULL,
	// 	"aggregatetype" text NOT NULL,
	// 	"aggregateid" text,
	// 	"type" text,
	// 	"payload" jsonb,
	// 	"traceparent" text,
	// 	"created_at" timestamptz NOT NULL DEFAULT now(),
	// 	PRIMARY KEY ("id", "created_at")
	// ) PARTITION BY RANGE ("created_at")
	// CREATE TABLE IF NOT EXISTS "app"."outbox_p2026120100" PARTITION OF "app"."outbox" FOR VALUES FROM ('2026-12-01T00:00:00Z') TO ('2026-12-02T00:00:00Z')
}
