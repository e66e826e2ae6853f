package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// TxnTracker is what the transactional producer needs of the checkpoint
// tracker: acks free in-flight capacity and move the acked position as
// ever, but only a committed Kafka transaction makes a position durable.
type TxnTracker interface {
	Acker
	// Acked is the newest position every event before which is acked.
	Acked() pglogrepl.LSN
	// MarkDurable says a committed progress record covers lsn: the slot may
	// be confirmed up to it.
	MarkDurable(lsn pglogrepl.LSN)
}

// TxnProducer publishes events in Kafka transactions for exactly-once
// delivery. Each transaction carries the events of one or more Postgres
// transactions (or part of a large one) and, last, one progress record
// saying exactly how far they reach; read_committed consumers see the events
// and the record together or not at all. Any error aborts the open
// transaction and ends Run, so the pipeline restarts from the newest
// committed record: nothing is re-sent that a committed transaction holds,
// and nothing of an aborted one is visible.
type TxnProducer struct {
	ap     sarama.AsyncProducer
	client sarama.Client
	halted sync.Once
	tr     TxnTracker
	obs    Observer
	log    zerolog.Logger
	id     string

	unpub *unpublishable

	topic string            // the progress topic
	base  checkpoint.Record // slot, system id, timeline, version, fingerprint

	interval  time.Duration
	idle      time.Duration // how often a position reached without events is recorded
	maxEvents int
	maxBytes  int

	// last is the newest event handed over, across Kafka transactions: a
	// transaction without events of its own still names the split Postgres
	// transaction an earlier one left open.
	last    checkpoint.EventPos
	durable pglogrepl.LSN

	snapshot func() *checkpoint.SnapshotProgress

	// ending is closed when the latest CommitTxn or AbortTxn returns.
	ending chan struct{}
}

// TxnSaramaConfig is SaramaConfig for a transactional producer with the
// relay's transactional id.
func TxnSaramaConfig(k config.Kafka) (*sarama.Config, error) {
	sc, err := SaramaConfig(k)
	if err != nil {
		return nil, err
	}
	sc.Producer.Transaction.ID = k.TransactionalID
	// An open transaction holds back every read_committed consumer of its
	// partitions (the last stable offset) until it ends; a relay that died
	// with one open normally has it aborted by its successor's start, and
	// this bounds the wait when no successor comes.
	sc.Producer.Transaction.Timeout = time.Minute
	sc.Producer.Transaction.Retry.Max = 50
	sc.Producer.Transaction.Retry.Backoff = 100 * time.Millisecond
	if err := sc.Validate(); err != nil {
		return nil, fault.Fatal(fmt.Errorf("kafka producer config: %w", err))
	}
	return sc, nil
}

// NewTxnProducer connects and initialises the transactional id, which
// fences every older producer with the same id (a zombie, a twin, this
// relay's previous attempt) and aborts a transaction it left open: from
// here on only this producer can commit.
//
// base is the progress record without its position. Call ResumeFrom with
// the committed record read after this, then Run; or Close.
func NewTxnProducer(k config.Kafka, pl config.Pipeline, base checkpoint.Record, tr TxnTracker, obs Observer, log zerolog.Logger) (*TxnProducer, error) {
	sc, err := TxnSaramaConfig(k)
	if err != nil {
		return nil, err
	}
	warnInsecure(k, log)
	client, err := dial(k, sc, "")
	if err != nil {
		return nil, err
	}
	ap, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		client.Close()
		return nil, TxnInitError(k, err)
	}
	idle := max(pl.TransactionInterval, time.Second)
	p := &TxnProducer{
		ap: ap, client: client, tr: tr, obs: obs, log: log, id: k.TransactionalID,
		unpub: newUnpublishable(k, obs, log, client.Partitions),
		topic: k.ProgressTopic, base: base,
		interval: pl.TransactionInterval, idle: idle,
		maxEvents: pl.TransactionMaxEvents, maxBytes: pl.TransactionMaxBytes,
	}
	log.Info().Str("transactional_id", k.TransactionalID).Msg("kafka transactions initialised; older producers with this transactional id are fenced")
	return p, nil
}

// ResumeFrom sets where the stream resumes: the committed record's position
// and the part of a transaction it already covers.
func (p *TxnProducer) ResumeFrom(lsn pglogrepl.LSN, partial *checkpoint.Partial) {
	p.durable, p.last = lsn, checkpoint.ResumePos(partial)
}

// RecordSnapshot makes every progress record carry the snapshot state f
// returns at commit time.
func (p *TxnProducer) RecordSnapshot(f func() *checkpoint.SnapshotProgress) { p.snapshot = f }

// Close releases a producer that Run was never called on.
func (p *TxnProducer) Close() {
	p.ap.AsyncClose()
	p.halt()
}

// TxnACLHint names what a principal needs for exactly-once delivery.
func TxnACLHint(id string) string {
	return fmt.Sprintf("grant the relay's principal WRITE and DESCRIBE on TransactionalId %q (kafka.transactional_id), "+
		"IDEMPOTENT_WRITE on the cluster (brokers before Kafka 3.0), and WRITE on the outbox topics and the progress topic", id)
}

// TxnInitError explains why the brokers refused to initialise the
// transactional id.
func TxnInitError(k config.Kafka, err error) error {
	switch {
	case errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed), errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return fault.Fatal(fmt.Errorf("kafka.delivery exactly_once: the brokers refused transactional id %q: %w; %s", k.TransactionalID, err, TxnACLHint(k.TransactionalID)))
	case errors.Is(err, sarama.ErrUnsupportedVersion), errors.Is(err, sarama.ErrInvalidTransactionTimeout):
		return fault.Fatal(fmt.Errorf("kafka.delivery exactly_once: the brokers do not support transactions as the relay uses them: %w (needs Kafka 0.11 or later with the transaction coordinator enabled)", err))
	case errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable), errors.Is(err, sarama.ErrNotCoordinatorForConsumer):
		return fmt.Errorf("kafka.delivery exactly_once: no transaction coordinator for transactional id %q: %w "+
			"(the brokers' __transaction_state topic needs transaction.state.log.replication.factor brokers up)", k.TransactionalID, err)
	}
	return classify(fmt.Errorf("kafka.delivery exactly_once: initialising transactional id %q on brokers %v: %w", k.TransactionalID, k.Brokers, err))
}

// progressMsg marks the progress record among the producer's messages.
type progressMsg struct{}

// Run publishes events from in until in is closed (then it commits what is
// open and returns nil) or an error or ctx ends it (then the open
// transaction is aborted).
func (p *TxnProducer) Run(ctx context.Context, in <-chan *decode.Event) error {
	var (
		wg      sync.WaitGroup
		pending atomic.Int64 // messages sent to sarama, not yet returned
		drained = make(chan struct{}, 1)
		failure = make(chan error, 1)
	)
	settle := func() {
		if pending.Add(-1) == 0 {
			select {
			case drained <- struct{}{}:
			default:
			}
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for msg := range p.ap.Successes() {
			if it, ok := msg.Metadata.(*item); ok {
				p.tr.Ack(it.ev.Seq)
				if p.obs != nil {
					p.obs.Published(it.ev, time.Since(it.sent))
				}
			}
			settle()
		}
	}()
	go func() {
		defer wg.Done()
		for perr := range p.ap.Errors() {
			var err error
			if it, ok := perr.Msg.Metadata.(*item); ok {
				// A topic refused for good is remembered, so that the next
				// attempt handles its events in place (by
				// kafka.on_unpublishable) before sending them.
				if err = p.unpub.refused(it.ev, perr.Err); err == nil {
					err = p.txnError(fmt.Errorf("publishing event %s of %s to topic %s: %w", it.ev.ID, it.ev.Table, it.ev.Topic, perr.Err))
				}
			} else {
				err = p.txnError(fmt.Errorf("publishing the progress record to topic %s: %w", p.topic, perr.Err))
			}
			if p.obs != nil {
				p.obs.PublishError(reason(perr.Err))
			}
			select {
			case failure <- err:
			default:
			}
			settle()
		}
	}()
	defer func() {
		// sarama must not be closed while a commit or abort is still in
		// its hands (endTxn gave up waiting for it): closing the client
		// makes that call fail fast, and then the producer can close.
		if p.ending != nil {
			select {
			case <-p.ending:
			default:
				p.halt()
				select {
				case <-p.ending:
				case <-time.After(5 * time.Second):
					p.log.Warn().Msg("kafka transaction did not end within 5s of closing the client; leaving the producer to the garbage collector")
					return
				}
			}
		}
		if !closeWithin(p.ap, &wg, 5*time.Second) {
			p.log.Warn().Msg("kafka producer did not close within 5s; its open transaction stays uncommitted (the next start aborts it)")
		}
		p.halt()
	}()

	t := txnState{}
	// One ticker for every wait below: a blocked send is common while
	// draining a backlog, and a timer per event would cost more than the send.
	check := time.NewTicker(txnStatusEvery)
	defer check.Stop()
	send := func(msg *sarama.ProducerMessage) error {
		pending.Add(1)
		select {
		case p.ap.Input() <- msg:
			return nil
		default:
		}
		// sarama is not taking records (a broker away, or simply busy):
		// wait, but not past the transaction's deadline.
		for {
			select {
			case p.ap.Input() <- msg:
				return nil
			case err := <-failure:
				return err
			case <-check.C:
				if err := p.overdue(&t); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	// commit ends the open transaction (opening one for the record alone
	// if none is), with the progress record as its last message.
	commit := func() error {
		for pending.Load() > 0 {
			select {
			case <-drained:
			case err := <-failure:
				return err
			case <-check.C:
				if err := p.doomed(); err != nil {
					return err
				}
				if err := p.overdue(&t); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !t.open {
			if err := p.begin(&t); err != nil {
				return err
			}
		}
		// Every event handed over is acked now, so the acked position is
		// the end of the newest Postgres transaction wholly in Kafka.
		rec := p.base
		rec.LSN, rec.Partial = checkpoint.Cut(p.tr.Acked(), p.last)
		rec.Time = time.Now()
		if p.snapshot != nil {
			// Read now, after every event of the transaction was acked: a
			// snapshot state that counts those rows commits with them.
			rec.Snapshot = p.snapshot()
		}
		msg := &sarama.ProducerMessage{Topic: p.topic, Key: sarama.ByteEncoder(rec.Key()), Value: sarama.ByteEncoder(rec.Marshal()), Metadata: progressMsg{}}
		if err := send(msg); err != nil {
			return err
		}
		cctx, cancel := context.WithDeadline(ctx, t.opened.Add(txnDeadline))
		err := p.endTxn(cctx, true)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return p.overdue(&t)
			}
			return err
		}
		t = txnState{}
		p.durable = rec.LSN
		p.tr.MarkDurable(rec.LSN)
		return nil
	}

	timer := time.NewTimer(p.idle)
	defer timer.Stop()
	var lastCommit time.Time
	err := func() error {
		for {
			select {
			case ev, ok := <-in:
				if !ok {
					// A clean stop: what is in hand goes out committed.
					if t.open || p.tr.Acked() > p.durable {
						return commit()
					}
					return nil
				}
				// An event that can never be published as it is stops the
				// relay or is replaced by its dead letter record, in its
				// place: the transaction keeps the order either way.
				var err error
				if ev, err = p.unpub.check(ev); err != nil {
					return err
				}
				if !t.open {
					if err := p.begin(&t); err != nil {
						return err
					}
					timer.Reset(p.interval)
				}
				if err := send(&newItem(ev, time.Now()).msg); err != nil {
					return err
				}
				t.events++
				t.bytes += recordSize(ev.Key, ev.Value, ev.Headers)
				p.last = checkpoint.EventPos{Txn: ev.Txn, Index: ev.TxnIndex}
				if t.events >= p.maxEvents || t.bytes >= p.maxBytes {
					if err := commit(); err != nil {
						return err
					}
					lastCommit = time.Now()
					timer.Reset(p.idle)
				}
			case <-timer.C:
				if err := p.doomed(); err != nil {
					return err
				}
				switch {
				case t.open && time.Since(t.opened) >= p.interval:
					if err := commit(); err != nil {
						return err
					}
					lastCommit = time.Now()
				case !t.open && p.tr.Acked() > p.durable && time.Since(lastCommit) >= p.idle:
					// The stream moved on without events (transactions of
					// other tables, keepalives): record it so the slot can
					// release that WAL.
					if err := commit(); err != nil {
						return err
					}
					lastCommit = time.Now()
				}
				if t.open {
					timer.Reset(time.Until(t.opened.Add(p.interval)))
				} else {
					timer.Reset(p.idle)
				}
			case err := <-failure:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}()
	if err != nil && t.open {
		p.abort()
	}
	return err
}

// txnStatusEvery is how often a wait for acks looks at the transaction's
// state: sarama retries a fenced producer's batches (PRODUCER_FENCED, which
// it does not treat as final) for as long as its retries last, while the
// transaction itself can no longer commit.
const txnStatusEvery = 100 * time.Millisecond

// txnDeadline bounds how long a transaction may stay open: the brokers
// abort one that outlives the transaction timeout (TxnSaramaConfig) anyway,
// and sarama, with the brokers away, retries its records for longer than
// that before it gives up on them.
const txnDeadline = 30 * time.Second

// overdue reports an open transaction past txnDeadline.
func (p *TxnProducer) overdue(t *txnState) error {
	if t.open && time.Since(t.opened) > txnDeadline {
		return fmt.Errorf("kafka transaction open for %s without committing (brokers unreachable or refusing produce?); aborting it and resuming from the last committed progress record", time.Since(t.opened).Round(time.Second))
	}
	return nil
}

// doomed reports a transaction that can no longer commit.
func (p *TxnProducer) doomed() error {
	st := p.ap.TxnStatus()
	switch {
	case st&sarama.ProducerTxnFlagFatalError != 0:
		return fmt.Errorf("kafka transaction failed for good (%s): %w", st, p.txnError(sarama.ErrProducerFenced))
	case st&sarama.ProducerTxnFlagAbortableError != 0:
		return fmt.Errorf("kafka transaction failed (%s); it is aborted and the relay resumes from the last committed progress record", st)
	}
	return nil
}

// txnState is the open Kafka transaction.
type txnState struct {
	open          bool
	opened        time.Time
	events, bytes int
}

func (p *TxnProducer) begin(t *txnState) error {
	if err := p.ap.BeginTxn(); err != nil {
		return p.txnError(fmt.Errorf("beginning a kafka transaction: %w", err))
	}
	*t = txnState{open: true, opened: time.Now()}
	return nil
}

// endTxn commits (or aborts) the open transaction. sarama's calls block
// until every message of the transaction is answered, which with the
// brokers away can take as long as its retries: a cancelled ctx stops the
// producer instead of waiting.
func (p *TxnProducer) endTxn(ctx context.Context, commit bool) error {
	done := make(chan error, 1)
	ending := make(chan struct{})
	p.ending = ending
	go func() {
		defer close(ending)
		if commit {
			done <- p.ap.CommitTxn()
		} else {
			done <- p.ap.AbortTxn()
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			what := "committing"
			if !commit {
				what = "aborting"
			}
			return p.txnError(fmt.Errorf("%s the kafka transaction: %w", what, err))
		}
		return nil
	case <-ctx.Done():
		p.halt()
		return ctx.Err()
	}
}

// abort ends the open transaction so read_committed consumers are not held
// back until it times out. Failing that is harmless: nothing of it is
// visible, and the next producer to start with the transactional id aborts
// it.
func (p *TxnProducer) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.endTxn(ctx, false); err != nil {
		p.log.Debug().Err(err).Msg("aborting the open kafka transaction")
		return
	}
	p.log.Info().Msg("aborted the open kafka transaction; restarting from the last committed progress record")
}

// txnError classifies a transaction error: being fenced means another relay
// with this transactional id has started (it now owns the stream), a
// refused authorization names the ACLs; anything else is retried from the
// last committed progress record.
func (p *TxnProducer) txnError(err error) error {
	switch {
	case errors.Is(err, sarama.ErrProducerFenced), errors.Is(err, sarama.ErrInvalidProducerEpoch):
		return fmt.Errorf("%w: another relay with transactional id %q took over (it fenced this one)", err, p.id)
	case errors.Is(err, sarama.ErrInvalidTxnState):
		return fmt.Errorf("%w: the coordinator ended this transaction: another relay with transactional id %q started (and fenced this one), or the transaction outlived its timeout", err, p.id)
	case errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed), errors.Is(err, sarama.ErrTopicAuthorizationFailed),
		errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return fault.Fatal(fmt.Errorf("%w; %s", err, TxnACLHint(p.id)))
	}
	return classify(err)
}

func (p *TxnProducer) halt() {
	p.halted.Do(func() { _ = p.client.Close() })
}
