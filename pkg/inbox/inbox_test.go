package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
	"github.com/relay-dev/relay/pkg/inbox"
)

type delivery struct {
	id      string
	account int
	amount  int
}

// deliveries returns n events, each delivered 1-3 times, shuffled.
func deliveries(n int, rng *rand.Rand) (events, all []delivery) {
	for i := range n {
		d := delivery{id: fmt.Sprintf("ev-%d", i), account: i % 7, amount: 1 + rng.IntN(100)}
		events = append(events, d)
		for range 1 + rng.IntN(3) {
			all = append(all, d)
		}
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return events, all
}

func setup(t *testing.T) (*pgxpool.Pool, *sql.DB) {
	t.Helper()
	pg := devenvtest.Postgres(t, devenv.PostgresOptions{})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db, err := sql.Open("pgx", pg.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	in, err := inbox.New(pool, inbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ddl := range []string{in.CreateTable(), in.CreateIndex(),
		"CREATE TABLE balances (account int PRIMARY KEY, total bigint NOT NULL)"} {
		if _, err := pool.Exec(ctx, ddl); err != nil {
			t.Fatalf("%s: %v", ddl, err)
		}
	}
	return pool, db
}

const credit = "INSERT INTO balances VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET total = balances.total + excluded.total"

func checkBalances(t *testing.T, pool *pgxpool.Pool, events []delivery) {
	t.Helper()
	want := map[int]int64{}
	for _, e := range events {
		want[e.account] += int64(e.amount)
	}
	rows, _ := pool.Query(context.Background(), "SELECT account, total FROM balances")
	got := map[int]int64{}
	for rows.Next() {
		var a int
		var total int64
		if err := rows.Scan(&a, &total); err != nil {
			t.Fatal(err)
		}
		got[a] = total
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("balances %v, want %v (every event exactly once)", got, want)
	}
}

// TestDuplicatedReorderedConcurrent delivers every event 1-3 times in random
// order to 6 concurrent workers, some failing their first attempt: the
// balances must show each event applied exactly once.
func TestDuplicatedReorderedConcurrent(t *testing.T) {
	pool, _ := setup(t)
	in, _ := inbox.New(pool, inbox.Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	events, all := deliveries(500, rng)

	ctx := context.Background()
	work := make(chan delivery)
	var processed, skipped, failed sync.Map
	var failOnce sync.Map // ids whose first attempt fails after the business write
	for _, e := range events[:50] {
		failOnce.Store(e.id, true)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range 6 {
		wg.Go(func() {
			for d := range work {
				for {
					ok, err := in.Process(ctx, "billing", d.id, func(tx pgx.Tx) error {
						if _, err := tx.Exec(ctx, credit, d.account, d.amount); err != nil {
							return err
						}
						if _, first := failOnce.LoadAndDelete(d.id); first {
							return errors.New("handler failed after its write")
						}
						return nil
					})
					if err != nil {
						failed.Store(d.id, true)
						continue // a redelivery, as a consumer that did not commit its offset gets
					}
					if ok {
						if _, dup := processed.LoadOrStore(d.id, true); dup {
							select {
							case errs <- fmt.Errorf("event %s processed twice", d.id):
							default:
							}
						}
					} else {
						skipped.Store(d.id, true)
					}
					break
				}
			}
		})
	}
	for _, d := range all {
		work <- d
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	n := 0
	processed.Range(func(any, any) bool { n++; return true })
	if n != len(events) {
		t.Errorf("%d events processed, want %d", n, len(events))
	}
	checkBalances(t, pool, events)
	t.Logf("%d events, %d deliveries, 50 first attempts failed", len(events), len(all))

	// Another group sees every event afresh.
	ok, err := in.Process(ctx, "audit", events[0].id, func(pgx.Tx) error { return nil })
	if err != nil || !ok {
		t.Errorf("another group: processed=%v err=%v", ok, err)
	}
}

func TestSQLAndSarama(t *testing.T) {
	pool, db := setup(t)
	in, err := inbox.NewSQL(db, inbox.Options{Table: "public.inbox"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	events, all := deliveries(100, rand.New(rand.NewPCG(3, 4)))
	for i, d := range all {
		msg := &sarama.ConsumerMessage{Topic: "t", Offset: int64(i), Headers: []*sarama.RecordHeader{
			{Key: []byte("type"), Value: []byte("Credit")}, {Key: []byte("id"), Value: []byte(d.id)},
		}}
		if _, err := in.ProcessMessage(ctx, "billing", msg, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, credit, d.account, d.amount)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	checkBalances(t, pool, events)
	if _, err := in.ProcessMessage(ctx, "billing", &sarama.ConsumerMessage{Topic: "t"}, func(*sql.Tx) error { return nil }); !errors.Is(err, inbox.ErrNoID) {
		t.Errorf("record without id: %v, want ErrNoID", err)
	}
}

func TestPrune(t *testing.T) {
	pool, _ := setup(t)
	in, _ := inbox.New(pool, inbox.Options{})
	ctx := context.Background()
	for _, id := range []string{"old", "new"} {
		if _, err := in.Process(ctx, "g", id, func(pgx.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "UPDATE inbox SET processed_at = now() - interval '8 days' WHERE id = 'old'"); err != nil {
		t.Fatal(err)
	}
	n, err := in.Prune(ctx, 7*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("Prune: %d, %v; want 1 row", n, err)
	}
	again, _ := in.Process(ctx, "g", "old", func(pgx.Tx) error { return nil })
	seen, _ := in.Process(ctx, "g", "new", func(pgx.Tx) error { return nil })
	if !again || seen {
		t.Errorf("after Prune: pruned id processed=%v (want true), kept id processed=%v (want false)", again, seen)
	}
}

func TestOptions(t *testing.T) {
	if _, err := inbox.NewSQL(nil, inbox.Options{Table: "a b"}); err == nil {
		t.Error("unquoted name with a space accepted")
	}
	in, err := inbox.NewSQL(nil, inbox.Options{Table: `app."Inbox"`})
	if err != nil {
		t.Fatal(err)
	}
	if got := in.CreateIndex(); got != `CREATE INDEX IF NOT EXISTS "Inbox_processed_at" ON "app"."Inbox" (processed_at)` {
		t.Error(got)
	}
}
