package inbox_test

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/relay-dev/relay/pkg/inbox"
)

// handler is a sarama consumer group handler that applies each OrderCreated
// event once: the shipment row and the inbox mark commit together, and the
// offset is marked only after that.
type handler struct {
	in    *inbox.Inbox[pgx.Tx]
	group string
}

func (handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx := sess.Context()
	for msg := range claim.Messages() {
		_, err := h.in.ProcessMessage(ctx, h.group, msg, func(tx pgx.Tx) error {
			var order struct {
				ID int `json:"id"`
			}
			if err := json.Unmarshal(msg.Value, &order); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO shipments (order_id) VALUES ($1)", order.ID)
			return err
		})
		if err != nil {
			// Not marked: the record comes again after a rebalance or
			// restart, and the inbox tells whether it was applied.
			return err
		}
		sess.MarkMessage(msg, "") // processed now or a duplicate: either way done
	}
	return nil
}

func Example_sarama() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return
	}
	defer pool.Close()
	in, err := inbox.New(pool, inbox.Options{})
	if err != nil {
		panic(err)
	}
	if _, err := pool.Exec(ctx, in.CreateTable()); err != nil {
		return
	}

	const group = "shipping"
	cfg := sarama.NewConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cg, err := sarama.NewConsumerGroup([]string{"kafka:9092"}, group, cfg)
	if err != nil {
		return
	}
	defer cg.Close()
	for ctx.Err() == nil {
		if err := cg.Consume(ctx, []string{"outbox.event.Order"}, handler{in: in, group: group}); err != nil {
			return
		}
	}
}

// With franz-go, pass the id header to Process.
func Example_franzGo() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return
	}
	defer pool.Close()
	in, _ := inbox.New(pool, inbox.Options{})
	const group = "shipping"
	cl, err := kgo.NewClient(kgo.SeedBrokers("kafka:9092"), kgo.ConsumerGroup(group),
		kgo.ConsumeTopics("outbox.event.Order"), kgo.DisableAutoCommit())
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		for _, rec := range fetches.Records() {
			id := ""
			for _, h := range rec.Headers {
				if h.Key == inbox.IDHeader {
					id = string(h.Value)
				}
			}
			if _, err := in.Process(ctx, group, id, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO shipments (order_id) VALUES ($1::jsonb->>'id')", rec.Value)
				return err
			}); err != nil {
				return // offsets not committed: redelivered later
			}
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return
		}
	}
}

// Retention: a daily job drops ids older than the topic's retention.
func ExampleInbox_Prune() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return
	}
	defer pool.Close()
	in, _ := inbox.New(pool, inbox.Options{})
	_, _ = in.Prune(ctx, 8*24*time.Hour) // topics keep 7 days
}
