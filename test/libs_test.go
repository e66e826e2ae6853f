package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/pkg/inbox"
	"github.com/relay-dev/relay/pkg/outbox"
)

// orderService is a service-like writer: each transaction inserts an order
// and its OrderCreated event through pkg/outbox, half of the workers with
// pgx into public.outbox, half with database/sql into a time-partitioned
// table. It remembers the orders that committed.
type orderService struct {
	mu        sync.Mutex
	committed map[string]string // order id -> event id
	trace     map[string]string // order id -> traceparent written
	emitted   sync.Map          // order id -> true: written with outbox.Emit
	plain     *outbox.Writer
	next      atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
	errs      chan error
}

const traceparentOf = "00-%032x-%016x-01"

func (s *orderService) place(ctx context.Context, tx outbox.Execer, w *outbox.Writer, worker string) (string, string, string, error) {
	n := s.next.Add(1)
	order := fmt.Sprintf("o-%d", n)
	if err := tx.Exec(ctx, "INSERT INTO orders (id, worker) VALUES ($1, $2)", order, worker); err != nil {
		return "", "", "", err
	}
	payload, _ := json.Marshal(map[string]any{"order": order, "worker": worker})
	tp := fmt.Sprintf(traceparentOf, n, n)
	ev := outbox.Event{AggregateType: "Order", AggregateID: order, Type: "OrderCreated", Payload: payload, TraceParent: tp}
	if n%3 == 0 {
		// Written as Debezium's tracingspancontext properties text.
		ev.TraceState = fmt.Sprintf("relaytest=%d", n)
	}
	var id uuid.UUID
	var err error
	if w == s.plain && n%5 == 0 {
		// The table-free outbox: trace context travels as envelope headers.
		s.emitted.Store(order, true)
		id, err = outbox.Emit(ctx, tx, outbox.DefaultPrefix, ev)
	} else {
		id, err = w.Write(ctx, tx, ev)
	}
	return order, id.String(), tp, err
}

func (s *orderService) done(order, id, tp string) {
	s.mu.Lock()
	s.committed[order] = id
	s.trace[order] = tp
	s.mu.Unlock()
}

func (s *orderService) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.committed)
}

func (s *orderService) run(ctx context.Context, pool *pgxpool.Pool, db *sql.DB, plain, parted *outbox.Writer) {
	fail := func(err error) {
		select {
		case s.errs <- err:
		default:
		}
	}
	for i := range 3 {
		worker := fmt.Sprintf("pgx-%d", i)
		s.wg.Go(func() {
			for {
				select {
				case <-s.stop:
					return
				default:
				}
				var order, id, tp string
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
					order, id, tp, err = s.place(ctx, outbox.Pgx(tx), plain, worker)
					return err
				})
				if err != nil {
					fail(err)
					return
				}
				s.done(order, id, tp)
			}
		})
	}
	for i := range 3 {
		worker := fmt.Sprintf("sql-%d", i)
		s.wg.Go(func() {
			for {
				select {
				case <-s.stop:
					return
				default:
				}
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					fail(err)
					return
				}
				order, id, tp, err := s.place(ctx, outbox.SQL(tx), parted, worker)
				if err == nil {
					err = tx.Commit()
				} else {
					_ = tx.Rollback()
				}
				if err != nil {
					fail(err)
					return
				}
				s.done(order, id, tp)
			}
		})
	}
}

// TestOutboxInboxExactlyOnce runs the order service above under concurrency
// through the relay, kills the relay with SIGKILL mid-stream, and consumes
// everything twice over, shuffled, with pkg/inbox: every order must be
// shipped exactly once, although Kafka may hold duplicates and the consumer
// sees each record at least twice.
func TestOutboxInboxExactlyOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	plain, err := outbox.New(outbox.Table{Name: "public.outbox", TraceColumn: "traceparent"})
	if err != nil {
		t.Fatal(err)
	}
	parted, err := outbox.New(outbox.Table{Name: "public.orders_outbox", TraceColumn: "traceparent"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(24 * time.Hour)
	e.exec("ALTER TABLE public.outbox ADD COLUMN traceparent text", e.db)
	e.exec(parted.CreatePartitionedTable(), e.db)
	e.exec(parted.CreatePartition(now.Add(-24*time.Hour), now.Add(48*time.Hour)), e.db)
	e.exec("CREATE TABLE orders (id text PRIMARY KEY, worker text NOT NULL)", e.db)
	e.exec("CREATE DATABASE shipping", "postgres")

	cfg := e.config(`outbox:
  - table: public.outbox
    trace_column: traceparent
    cloudevents: true
  - table: public.orders_outbox
    trace_column: traceparent
messages:
  - prefix: outbox
    cloudevents: true
`)
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")

	pool, err := pgxpool.New(ctx, e.url())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db, err := sql.Open("pgx", e.url())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc := &orderService{committed: map[string]string{}, trace: map[string]string{}, stop: make(chan struct{}), errs: make(chan error, 1)}
	svc.plain = plain
	svc.run(ctx, pool, db, plain, parted)
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(svc.stop)
			svc.wg.Wait()
		}
	}
	defer halt()

	topic := "outbox.event.Order"
	e.waitDelivered(300, 60*time.Second, topic)
	r.kill()
	waitFor(t, 30*time.Second, "orders committed while the relay is down", func() bool { return svc.count() >= 600 })
	e.startRelay(cfg)
	e.waitDelivered(900, 60*time.Second, topic)
	halt()
	select {
	case err := <-svc.errs:
		t.Fatalf("order service: %v", err)
	default:
	}
	committed := svc.committed
	traceOf := svc.trace
	byEvent := map[string]string{}
	for order, id := range committed {
		byEvent[id] = order
	}
	// Counting records is not enough: duplicates count too.
	var recs []devenv.Record
	seen := map[string]int{}
	waitFor(t, 90*time.Second, "every committed event in Kafka", func() bool {
		recs = e.readAll(topic)
		clear(seen)
		for _, rec := range recs {
			seen[rec.Headers["id"]]++
		}
		for id := range byEvent {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	})
	dups := len(recs) - len(seen)
	checkTraceAndCloudEvents(t, recs, byEvent, traceOf, &svc.emitted)

	// The consumer: its own database, inbox and business table, which has no
	// unique key, so an order shipped twice would show.
	sp, err := pgxpool.New(ctx, e.pg.URL("postgres", "shipping"))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	in, err := inbox.New(sp, inbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ddl := range []string{in.CreateTable(), "CREATE TABLE shipments (order_id text NOT NULL, traceparent text)"} {
		if _, err := sp.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	deliveries := append(append([]devenv.Record{}, recs...), recs...)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	work := make(chan devenv.Record)
	var applied, skipped atomic.Int64
	var cwg sync.WaitGroup
	cerr := make(chan error, 1)
	for range 4 {
		cwg.Go(func() {
			for rec := range work {
				ok, err := in.Process(ctx, "shipping", rec.Headers["id"], func(tx pgx.Tx) error {
					var p struct{ Order string }
					if err := json.Unmarshal(rec.Value, &p); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "INSERT INTO shipments VALUES ($1, $2)", p.Order, rec.Headers["traceparent"])
					return err
				})
				if err != nil {
					select {
					case cerr <- err:
					default:
					}
					continue
				}
				if ok {
					applied.Add(1)
				} else {
					skipped.Add(1)
				}
			}
		})
	}
	for _, d := range deliveries {
		work <- d
	}
	close(work)
	cwg.Wait()
	select {
	case err := <-cerr:
		t.Fatalf("consumer: %v", err)
	default:
	}

	rows, err := sp.Query(ctx, "SELECT order_id, count(*) FROM shipments GROUP BY order_id")
	if err != nil {
		t.Fatal(err)
	}
	shipped := map[string]int64{}
	for rows.Next() {
		var o string
		var n int64
		if err := rows.Scan(&o, &n); err != nil {
			t.Fatal(err)
		}
		shipped[o] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var twice, missing, unknown int
	for o, n := range shipped {
		if _, ok := committed[o]; !ok {
			unknown++
		} else if n != 1 {
			twice++
		}
	}
	for o := range committed {
		if shipped[o] == 0 {
			missing++
		}
	}
	t.Logf("%d orders committed (pgx + database/sql), %d records in Kafka (%d relay duplicates after kill -9), %d deliveries to the consumer: %d applied, %d skipped",
		len(committed), len(recs), dups, len(deliveries), applied.Load(), skipped.Load())
	if twice != 0 || missing != 0 || unknown != 0 || applied.Load() != int64(len(committed)) {
		t.Fatalf("shipments: %d orders shipped more than once, %d never, %d unknown; %d applied for %d orders", twice, missing, unknown, applied.Load(), len(committed))
	}
}

// checkTraceAndCloudEvents checks, on the records as an independent client
// read them, that every traceparent the writer stored arrived intact (as a
// bare value and as tracingspancontext properties text), and that the
// CloudEvents table's records carry the attributes CloudEvents 1.0 requires
// in the Kafka binding's binary mode, the value untouched.
func checkTraceAndCloudEvents(t *testing.T, recs []devenv.Record, byEvent, traceOf map[string]string, emitted *sync.Map) {
	t.Helper()
	var ce, plain, withState, messages, bad int
	for _, rec := range recs {
		id := rec.Headers["id"]
		order := byEvent[id]
		if got, want := rec.Headers["traceparent"], traceOf[order]; got != want {
			if bad++; bad < 5 {
				t.Errorf("event %s: traceparent %q, want %q", id, got, want)
			}
		}
		if st, ok := rec.Headers["tracestate"]; ok {
			withState++
			if !strings.HasPrefix(st, "relaytest=") {
				t.Errorf("event %s: tracestate %q", id, st)
			}
		}
		if _, ok := rec.Headers["ce_specversion"]; !ok {
			plain++
			continue
		}
		ce++
		source := "/relay/app/public.outbox"
		if _, ok := emitted.Load(order); ok {
			source = "/relay/app/message/outbox"
			messages++
		}
		var p struct{ Order string }
		if err := json.Unmarshal(rec.Value, &p); err != nil || p.Order != order {
			t.Errorf("event %s: value %q is not the payload written", id, rec.Value)
		}
		ts, err := time.Parse(time.RFC3339Nano, rec.Headers["ce_time"])
		want := map[string]string{
			"ce_specversion": "1.0", "ce_id": id, "ce_source": source, "ce_type": "OrderCreated",
			"ce_subject": order, "content-type": "application/json",
		}
		for k, v := range want {
			if rec.Headers[k] != v {
				if bad++; bad < 5 {
					t.Errorf("event %s: %s = %q, want %q", id, k, rec.Headers[k], v)
				}
			}
		}
		if err != nil || ts.Sub(rec.Timestamp).Abs() > time.Millisecond {
			t.Errorf("event %s: ce_time %q is not the commit time %s: %v", id, rec.Headers["ce_time"], rec.Timestamp, err)
		}
	}
	if ce == 0 || plain == 0 || withState == 0 || messages == 0 {
		t.Errorf("records: %d with CloudEvents (%d of them logical messages), %d without, %d with tracestate; want some of each", ce, messages, plain, withState)
	}
}
