package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/logrepl"
	"github.com/relay-dev/relay/pkg/metrics"
	"github.com/relay-dev/relay/pkg/sink"
)

// checkTimeout bounds each network step of `relay check` so an unreachable
// host yields a ✗ line rather than a hang.
const checkTimeout = 10 * time.Second

// checklist prints one line per check. Warnings (!) point at risks that do not
// stop the relay and leave the exit status alone.
type checklist struct {
	w      io.Writer
	failed int
}

func (c *checklist) ok(what, detail string) { fmt.Fprintf(c.w, "✓ %s: %s\n", what, detail) }

func (c *checklist) fail(what, detail, fix string) {
	c.failed++
	fmt.Fprintf(c.w, "✗ %s: %s\n", what, detail)
	if fix != "" {
		fmt.Fprintf(c.w, "    fix: %s\n", fix)
	}
}

func (c *checklist) warn(what, detail, fix string) {
	fmt.Fprintf(c.w, "! %s: %s\n", what, detail)
	if fix != "" {
		fmt.Fprintf(c.w, "    fix: %s\n", fix)
	}
}

func (c *checklist) skip(what, why string) { fmt.Fprintf(c.w, "- %s: skipped (%s)\n", what, why) }

// cmdCheck validates the configuration and the environment the relay would
// run in, and returns the exit status: 0 when nothing failed.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	path, err := configFlag("check", args, stderr)
	if err != nil {
		return 2
	}
	c := &checklist{w: stdout}
	cfg, err := config.Load(path)
	if err != nil {
		var verr *config.ValidationError
		if errors.As(err, &verr) {
			for _, p := range verr.Problems {
				key, detail, _ := strings.Cut(p, ": ")
				c.fail(key, detail, "")
			}
		} else {
			c.fail("config", err.Error(), "")
		}
		fmt.Fprintf(stdout, "\n%d problem(s) in the configuration; fix them and run relay check again\n", c.failed)
		return 1
	}
	name := path
	if name == "" {
		name = "environment (RELAY_*)"
	}
	c.ok("config", name+" is valid")

	checkPostgres(ctx, c, cfg)
	checkKafka(c, cfg)
	checkProgressTopic(c, cfg)

	if c.failed > 0 {
		fmt.Fprintf(stdout, "\n%d check(s) failed\n", c.failed)
		return 1
	}
	fmt.Fprintln(stdout, "\nall checks passed")
	return 0
}

func checkPostgres(ctx context.Context, c *checklist, cfg *config.Config) {
	pg := cfg.Postgres
	redact := func(err error) string { return pg.URL.RedactError(err) }
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	conn, err := pgx.Connect(cctx, pg.URL.Reveal())
	if err != nil {
		c.fail("postgres", fmt.Sprintf("cannot connect to %s: %s", pg.URL.Redacted(), redact(err)),
			"check postgres.url (host, port, database, user, password or password_file, sslmode) and that pg_hba.conf admits this host")
		c.skip("postgres checks", "no connection")
		return
	}
	defer closeQuietly(conn)

	var user, version, db string
	if err := conn.QueryRow(cctx, "SELECT current_user, current_setting('server_version'), current_database()").Scan(&user, &version, &db); err != nil {
		c.fail("postgres", "reading server details: "+redact(err), "")
		return
	}
	c.ok("postgres", fmt.Sprintf("connected to %s as %s (PostgreSQL %s)", pg.URL.Redacted(), user, version))
	if err := logrepl.CheckPrimary(cctx, conn.PgConn()); err != nil {
		c.fail("postgres", redact(err), "point postgres.url at the primary, or list every host (postgres://relay@db-a,db-b/app?target_session_attrs=read-write)")
	}

	if err := logrepl.CheckWALLevel(cctx, conn); err != nil {
		c.fail("wal_level", redact(err), "set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart Postgres")
	} else {
		c.ok("wal_level", "logical")
	}
	if err := logrepl.CheckRole(cctx, conn); err != nil {
		c.fail("role", redact(err), fmt.Sprintf("as a superuser: ALTER ROLE %s REPLICATION", pgx.Identifier{user}.Sanitize()))
	} else {
		c.ok("role", fmt.Sprintf("%s may stream changes (REPLICATION or superuser)", user))
	}

	for i, t := range cfg.Outbox {
		checkOutboxTable(cctx, c, conn, i, t, redact)
	}
	if cfg.Snapshot.Mode != config.SnapshotNever {
		checkSnapshotSelect(cctx, c, conn, cfg, user, redact)
	}
	checkPublication(cctx, c, conn, cfg, redact)
	checkSlot(cctx, c, conn, pg, db, redact)
}

// checkSnapshotSelect warns when the role cannot read an outbox table: the
// initial snapshot (of a new slot, or of a table added later) and replay
// read them with SQL, while streaming needs no table privilege at all.
func checkSnapshotSelect(ctx context.Context, c *checklist, conn *pgx.Conn, cfg *config.Config, user string, redact func(error) string) {
	var denied []string
	for _, t := range cfg.Outbox {
		schema, name, err := config.SplitTable(t.Table)
		if err != nil {
			continue
		}
		var ok bool
		err = conn.QueryRow(ctx, `SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, schema, name).Scan(&ok)
		if err != nil {
			if !errors.Is(err, pgx.ErrNoRows) {
				c.fail("snapshot", redact(err), "")
			}
			continue
		}
		if !ok {
			denied = append(denied, quoteTable(t.Table))
		}
	}
	if len(denied) == 0 {
		c.ok("snapshot", fmt.Sprintf("mode %s; %s may read every outbox table", cfg.Snapshot.Mode, user))
		return
	}
	c.warn("snapshot", fmt.Sprintf("mode %s, but %s cannot SELECT from %s: an initial snapshot of a new slot or an added table, and relay replay, would stop", cfg.Snapshot.Mode, user, strings.Join(denied, ", ")),
		fmt.Sprintf("GRANT SELECT ON %s TO %s, or set snapshot.mode: never", strings.Join(denied, ", "), pgx.Identifier{user}.Sanitize()))
}

func closeQuietly(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func checkOutboxTable(ctx context.Context, c *checklist, conn *pgx.Conn, i int, t config.Table, redact func(error) string) {
	what := "table " + t.Table
	// CheckTable is the start-up check of `relay run` too, column types
	// included, so check passes exactly what run accepts.
	cols, err := logrepl.CheckTable(ctx, conn, t)
	if err != nil {
		fix := fmt.Sprintf("create the table, or point outbox[%d].table at it", i)
		switch {
		case errors.Is(err, logrepl.ErrColumnType):
			fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN ... TYPE ..., or map outbox[%d].columns to columns of a usable type", quoteTable(t.Table), i)
		case cols != nil:
			fix = fmt.Sprintf("add the column, or map outbox[%d].columns to existing ones", i)
		}
		c.fail(what, redact(err), fix)
		return
	}
	c.ok(what, fmt.Sprintf("columns id=%s key=%s payload=%s (%s) route_by=%s type=%s",
		t.Columns.ID, t.Columns.Key, t.Columns.Payload, cols[t.Columns.Payload], t.Columns.RouteBy, t.Columns.Type))
}

func checkPublication(ctx context.Context, c *checklist, conn *pgx.Conn, cfg *config.Config, redact func(error) string) {
	pg := cfg.Postgres
	what := "publication " + pg.Publication
	ps, err := logrepl.ReadPublication(ctx, conn, pg.Publication, cfg.Outbox)
	if err != nil {
		c.fail(what, redact(err), "")
		return
	}
	pub := pgx.Identifier{pg.Publication}.Sanitize()
	var tables, wantUpdates []string
	for _, t := range cfg.Outbox {
		tables = append(tables, quoteTable(t.Table))
		if t.WantsUpdates() {
			wantUpdates = append(wantUpdates, t.Table)
		}
	}
	var slotExists bool
	if !ps.Exists {
		st, err := logrepl.ReadSlot(ctx, conn, pg.Slot)
		if err != nil {
			c.fail(what, redact(err), "")
			return
		}
		slotExists = st.Exists && st.Plugin == "pgoutput" // a foreign slot is checkSlot's to report
	}
	var partitioned []string
	for _, t := range ps.Partitioned {
		partitioned = append(partitioned, quoteTable(t.Table))
	}
	switch {
	case !ps.Exists && slotExists:
		// What `relay run` refuses: a publication created now does not
		// cover the WAL the slot has yet to decode.
		c.fail(what, fmt.Sprintf("does not exist, but slot %s does: the publication was dropped after the slot was created, and changes committed since cannot be decoded through a new one", pg.Slot),
			fmt.Sprintf("%s; then, if the relay still stops on the gap, accept it by dropping the slot (SELECT pg_drop_replication_slot('%s')) and replay the outbox rows committed since the drop with relay replay",
				logrepl.CreatePublicationSQL(pg, cfg.Outbox), pg.Slot))
	case !ps.Exists && pg.CreatePublication:
		c.ok(what, "does not exist yet; the relay creates it on start (postgres.create_publication: true) for "+strings.Join(tables, ", "))
	case !ps.Exists:
		c.fail(what, "does not exist and postgres.create_publication is false",
			"as the tables' owner: "+logrepl.CreatePublicationSQL(pg, cfg.Outbox))
	case !ps.ViaRoot && len(partitioned) > 0:
		c.fail(what, "publish_via_partition_root is off, so rows of the partitioned outbox table(s) "+strings.Join(partitioned, ", ")+" would arrive under their partitions' names and never be relayed",
			fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true)", pub))
	case !ps.Inserts:
		c.fail(what, "does not publish inserts", fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert')", pub))
	case len(ps.Missing) > 0:
		var missing []string
		for _, t := range ps.Missing {
			missing = append(missing, quoteTable(t.Table))
		}
		if pg.CreatePublication {
			c.ok(what, "exists; the relay adds "+strings.Join(missing, ", ")+" on start (postgres.create_publication: true)")
		} else {
			c.fail(what, "does not contain "+strings.Join(missing, ", "),
				fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pub, strings.Join(missing, ", ")))
		}
	default:
		c.ok(what, "exists, publishes inserts and contains every outbox table")
	}
	if len(ps.Filtered) > 0 {
		var filtered []string
		for _, t := range ps.Filtered {
			filtered = append(filtered, quoteTable(t.Table))
		}
		c.warn(what, "has a row filter (WHERE) on "+strings.Join(filtered, ", ")+": rows it leaves out are never sent to the relay, so never relayed",
			fmt.Sprintf("if every row is an event, publish the tables without it: ALTER PUBLICATION %s SET TABLE %s (this also removes any other table from the publication)", pub, strings.Join(tables, ", ")))
	}
	if ps.Exists && !ps.Updates && len(wantUpdates) > 0 {
		c.warn(what, "does not publish updates, so on_update cannot see UPDATEs on "+strings.Join(wantUpdates, ", "),
			fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update')", pub))
	}
}

// quoteTable renders a configured table name as SQL for a suggested fix.
func quoteTable(name string) string {
	schema, table, err := config.SplitTable(name)
	if err != nil {
		return name
	}
	return pgx.Identifier{schema, table}.Sanitize()
}

func checkSlot(ctx context.Context, c *checklist, conn *pgx.Conn, pg config.Postgres, db string, redact func(error) string) {
	what := "slot " + pg.Slot
	st, err := logrepl.ReadSlot(ctx, conn, pg.Slot)
	if err != nil {
		c.fail(what, redact(err), "")
		return
	}
	var keep string
	if err := conn.QueryRow(ctx, "SHOW max_slot_wal_keep_size").Scan(&keep); err != nil {
		keep = "unknown (" + redact(err) + ")"
	} else if keep == "-1" {
		keep = "-1 (unlimited: a stopped relay makes Postgres keep WAL until the disk fills)"
	}
	// PostgreSQL 18 can also invalidate a slot that nobody streamed from
	// for this long; the setting does not exist before.
	var idle *string
	if err := conn.QueryRow(ctx, "SELECT current_setting('idle_replication_slot_timeout', true)").Scan(&idle); err == nil && idle != nil {
		v := *idle
		if v == "0" {
			v = "0 (off)"
		} else {
			v += " (a relay stopped for longer loses its slot)"
		}
		keep += ", idle_replication_slot_timeout = " + v
	}
	fo, foErr := logrepl.ReadFailover(ctx, conn, pg.Slot)
	defer func() {
		if foErr != nil {
			c.fail("failover", redact(foErr), "")
			return
		}
		checkFailover(c, fo, pg, st.Exists)
	}()
	if err := logrepl.CheckSlot(st, pg, db); err != nil {
		c.fail(what, redact(err), "")
		return
	}
	if !st.Exists {
		c.ok(what, "does not exist yet; the relay creates it on start (postgres.create_slot: true); max_slot_wal_keep_size = "+keep)
		return
	}
	active := "inactive"
	if st.Active {
		active = fmt.Sprintf("active pid %d (another relay streams from it; this one would wait as a hot standby)", st.ActivePID)
	}
	detail := fmt.Sprintf("plugin %s, %s, wal_status %s, confirmed_flush_lsn %s, max_slot_wal_keep_size = %s",
		st.Plugin, active, st.WALStatus, st.Confirmed, keep)
	if st.WALStatus == "unreserved" {
		c.warn(what, detail+": the slot is about to lose WAL it needs", "start the relay now, or raise max_slot_wal_keep_size")
		return
	}
	c.ok(what, detail)
}

// checkFailover says whether the slot survives a failover to a standby.
func checkFailover(c *checklist, fo logrepl.Failover, pg config.Postgres, exists bool) {
	warnings, err := logrepl.CheckFailover(fo, pg)
	if err != nil {
		c.fail("failover", err.Error(), "set postgres.slot_failover: false, or upgrade to PostgreSQL 17 or later")
		return
	}
	for _, w := range warnings {
		c.warn("failover", w, "see README \"Failover\"")
	}
	if len(warnings) > 0 {
		return
	}
	switch {
	case !fo.Supported:
		c.ok("failover", fmt.Sprintf("PostgreSQL %d has no failover slots: after a failover to a standby the slot is missing there and the relay stops (README \"Failover\")", fo.Major))
	case fo.SlotFailover || pg.SlotFailover:
		state := "a failover slot"
		switch {
		case !exists:
			state = "created as a failover slot on start (postgres.slot_failover: true)"
		case !fo.SlotFailover:
			state = "made a failover slot on start (postgres.slot_failover: true)"
		}
		c.ok("failover", fmt.Sprintf("slot %s is %s; synchronized_standby_slots = %s; standbys need sync_replication_slots = on, hot_standby_feedback = on and dbname in primary_conninfo", pg.Slot, state, fo.StandbySlots))
	default:
		c.ok("failover", fmt.Sprintf("slot %s is not a failover slot (postgres.slot_failover: false); no physical standby seen", pg.Slot))
	}
}

func checkKafka(c *checklist, cfg *config.Config) {
	sc, err := sink.SaramaConfig(cfg.Kafka)
	if err != nil {
		c.fail("kafka", err.Error(), "")
		return
	}
	// Fail fast, and never create a topic by asking about it.
	sc.Net.DialTimeout = checkTimeout
	sc.Net.ReadTimeout = checkTimeout
	sc.Metadata.Retry.Max = 1
	sc.Metadata.AllowAutoTopicCreation = false
	// Without a full refresh sarama connects lazily and NewClient would
	// succeed against brokers it never reached.
	sc.Metadata.Full = true
	// An operator runs check to learn what is wrong: weak settings are
	// flagged, and a refused login or an untrusted certificate is named as
	// such rather than reported as unreachable brokers.
	for _, w := range sink.InsecureSettings(cfg.Kafka) {
		c.warn(w.Setting, w.Risk, "")
	}
	if cfg.Kafka.Oversized != config.UnpublishableUnset {
		c.warn("kafka.oversized", "deprecated: it is read as kafka.on_unpublishable, which also covers illegal topic names, refused topics and missing partitions",
			"rename it to kafka.on_unpublishable")
	}
	if err := sink.Handshake(cfg.Kafka, sc); err != nil {
		c.fail("kafka", err.Error(), "check kafka.brokers, the network path, and kafka.tls / kafka.sasl")
		c.skip("kafka topics", "no connection")
		return
	}
	client, err := sarama.NewClient(cfg.Kafka.Brokers, sc)
	if err != nil {
		c.fail("kafka", fmt.Sprintf("cannot reach brokers %v: %v", cfg.Kafka.Brokers, err),
			"check kafka.brokers, the network path, and kafka.tls / kafka.sasl")
		c.skip("kafka topics", "no connection")
		return
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		client.Close()
		c.fail("kafka", "creating admin client: "+err.Error(), "")
		return
	}
	defer admin.Close() // closes client too
	c.ok("kafka", fmt.Sprintf("connected to %v (%d broker(s) in the cluster)", cfg.Kafka.Brokers, len(client.Brokers())))
	if cfg.Kafka.ExactlyOnce() {
		checkTransactions(c, client, cfg.TransactionalID())
	}

	autoCreate, autoKnown := brokerAutoCreate(client, admin)

	type route struct{ owner, topic string }
	var fixed, templates []route
	for i, t := range cfg.Outbox {
		r := route{fmt.Sprintf("outbox[%d] (%s)", i, t.Table), t.Topic}
		if strings.Contains(t.Topic, "${routedByValue}") {
			templates = append(templates, r)
		} else {
			fixed = append(fixed, r)
		}
	}
	for i, m := range cfg.Messages {
		r := route{fmt.Sprintf("messages[%d] (prefix %s)", i, m.Prefix), m.Topic}
		if strings.Contains(m.Topic, "${routedByValue}") {
			templates = append(templates, r)
		} else {
			fixed = append(fixed, r)
		}
	}
	if policy, key := cfg.Kafka.Unpublishable(); policy == config.UnpublishableDeadLetter {
		fixed = append(fixed, route{key + " dead_letter (kafka.dead_letter_topic)", cfg.Kafka.DeadLetterTopic})
	}

	if len(fixed) > 0 {
		var names []string
		for _, r := range fixed {
			names = append(names, r.topic)
		}
		metas, err := admin.DescribeTopics(names)
		if err != nil {
			c.fail("kafka topics", "describing "+strings.Join(names, ", ")+": "+err.Error(), "")
		} else {
			found := map[string]*sarama.TopicMetadata{}
			for _, m := range metas {
				found[m.Name] = m
			}
			for _, r := range fixed {
				what := "topic " + r.topic
				m := found[r.topic]
				switch {
				case m != nil && m.Err == sarama.ErrNoError:
					c.ok(what, fmt.Sprintf("exists with %d partition(s), used by %s", len(m.Partitions), r.owner))
				case (m == nil || m.Err == sarama.ErrUnknownTopicOrPartition) && autoKnown && autoCreate:
					c.ok(what, "does not exist yet; the broker creates it on first use (auto.create.topics.enable=true)")
				case m == nil || m.Err == sarama.ErrUnknownTopicOrPartition:
					c.fail(what, "does not exist (used by "+r.owner+")",
						fmt.Sprintf("create it, e.g. kafka-topics.sh --create --topic %s --partitions N, or enable auto.create.topics.enable", r.topic))
				default:
					c.fail(what, m.Err.Error(), "grant the relay's principal Describe and Write on the topic")
				}
			}
		}
	}
	for _, r := range templates {
		what := "topics " + r.topic
		switch {
		case autoKnown && autoCreate:
			c.ok(what, "created on first use (broker auto.create.topics.enable=true), used by "+r.owner)
		case autoKnown:
			c.warn(what, "the broker does not auto-create topics (auto.create.topics.enable=false)",
				"create every topic this template produces before its first event is written, or events to a missing topic stop the relay")
		default:
			c.ok(what, "topics are created on first use if the broker allows (auto.create.topics.enable could not be read), used by "+r.owner)
		}
	}
}

// checkTransactions asks for the transaction coordinator of the relay's
// transactional id: that needs brokers with transactions (0.11+, the
// transaction state topic available) and DESCRIBE on the id. It does not
// initialise the id, which would fence a relay running with it.
func checkTransactions(c *checklist, client sarama.Client, id string) {
	what := "kafka transactions"
	b, err := client.TransactionCoordinator(id)
	if err != nil {
		fix := "exactly_once needs Kafka 0.11 or later with the transaction coordinator up (transaction.state.log.replication.factor brokers available)"
		if errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed) || errors.Is(err, sarama.ErrClusterAuthorizationFailed) {
			fix = sink.TxnACLHint(id)
		}
		c.fail(what, fmt.Sprintf("no transaction coordinator for transactional id %q: %v", id, err), fix)
		return
	}
	c.ok(what, fmt.Sprintf("transactional id %q has its coordinator on broker %d; the relay also needs WRITE on it, checked when it starts", id, b.ID()))
}

// brokerAutoCreate reads auto.create.topics.enable from one broker; ok is
// false when the broker does not say (old versions, ACLs, test brokers).
func brokerAutoCreate(client sarama.Client, admin sarama.ClusterAdmin) (enabled, ok bool) {
	brokers := client.Brokers()
	if len(brokers) == 0 {
		return false, false
	}
	name := strconv.Itoa(int(brokers[0].ID()))
	results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{
		Type:        sarama.BrokerResource,
		Name:        name,
		ConfigNames: []string{"auto.create.topics.enable"},
	}}, sarama.DescribeConfigsOptions{})
	if err != nil {
		return false, false
	}
	for _, r := range results {
		if r.Name != name || r.ErrorCode != sarama.ErrNoError {
			continue
		}
		for _, e := range r.Configs {
			if e.Name == "auto.create.topics.enable" {
				return e.Value == "true", true
			}
		}
	}
	return false, false
}

// cmdStatus prints the slot's state for operators.
// checkProgressTopic checks the topic that holds the relay's progress
// records: without it the relay cannot start, and a topic that is not
// compacted grows forever.
func checkProgressTopic(c *checklist, cfg *config.Config) {
	what := "progress topic " + cfg.Kafka.ProgressTopic
	store, err := sink.OpenProgress(cfg.Kafka, false)
	switch {
	case errors.Is(err, sink.ErrNoProgressTopic):
		c.ok(what, "created on first start (one partition, cleanup.policy=compact); the relay needs CREATE on it, or create it so")
		return
	case err != nil:
		c.fail(what, err.Error(), "check kafka.brokers and that the relay may DESCRIBE, READ and WRITE the topic")
		return
	}
	defer store.Close()
	policy, err := store.CleanupPolicy()
	switch {
	case err != nil:
		c.warn(what, "cannot read its cleanup.policy: "+err.Error(), "")
	case !strings.Contains(policy, "compact"):
		c.warn(what, fmt.Sprintf("cleanup.policy is %q: the relay writes a record many times a second, which only compaction keeps small", policy),
			"kafka-configs.sh --alter --entity-type topics --entity-name "+cfg.Kafka.ProgressTopic+" --add-config cleanup.policy=compact")
	default:
		c.ok(what, "exists, cleanup.policy "+policy)
	}
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("status", args, stderr)
	if err != nil {
		return err
	}
	pg := cfg.Postgres
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	conn, err := pgx.Connect(cctx, pg.URL.Reveal())
	if err != nil {
		return fmt.Errorf("connecting to postgres %s: %s", pg.URL.Redacted(), pg.URL.RedactError(err))
	}
	defer closeQuietly(conn)
	st, err := logrepl.ReadSlot(cctx, conn, pg.Slot)
	if err != nil {
		return errors.New(pg.URL.RedactError(err))
	}
	if !st.Exists {
		return fmt.Errorf("replication slot %q does not exist (the relay creates it on its first start)", pg.Slot)
	}
	lag, err := metrics.ReadSlotLag(cctx, conn, pg.Slot)
	lagText := strconv.FormatInt(lag, 10)
	if err != nil {
		lagText = "unknown (" + pg.URL.RedactError(err) + ")"
	}
	pid := "none (inactive)"
	if st.Active {
		pid = strconv.Itoa(st.ActivePID)
	}
	fmt.Fprintf(stdout, "slot:          %s (plugin %s, database %s)\n", pg.Slot, st.Plugin, st.Database)
	fmt.Fprintf(stdout, "lag_bytes:     %s\n", lagText)
	fmt.Fprintf(stdout, "confirmed_lsn: %s\n", st.Confirmed)
	fmt.Fprintf(stdout, "active_pid:    %s\n", pid)
	fmt.Fprintf(stdout, "wal_status:    %s\n", st.WALStatus)
	fo, err := logrepl.ReadFailover(cctx, conn, pg.Slot)
	switch {
	case err != nil:
		fmt.Fprintf(stdout, "failover:      unknown (%s)\n", pg.URL.RedactError(err))
	case !fo.Supported:
		fmt.Fprintf(stdout, "failover:      not supported (PostgreSQL %d; failover slots need %d+)\n", fo.Major, logrepl.FailoverSlotsVersion)
	default:
		// synced is true on a standby's copy, and stays true on a
		// promoted standby's.
		fmt.Fprintf(stdout, "failover:      %t (synced %t, synchronized_standby_slots %q)\n", fo.SlotFailover, fo.SlotSynced, fo.StandbySlots)
	}
	printProgress(cctx, stdout, cfg)
	return nil
}

// describeSnapshot says how far the snapshot of the rows that predate the
// stream got, as the progress record tells.
func describeSnapshot(s *checkpoint.SnapshotProgress) string {
	tables := "none"
	if len(s.Tables) > 0 {
		tables = strings.Join(s.Tables, ", ")
	}
	if s.Done {
		return "complete (tables covered: " + tables + ")"
	}
	rows := ""
	if s.Rows > 0 {
		rows = fmt.Sprintf(", %d rows published of about %d", s.Rows, s.RowsEstimate)
	}
	return fmt.Sprintf("in progress or interrupted (tables done: %s%s); the slot stays at the progress LSN until it completes", tables, rows)
}

// printProgress prints the relay's progress record next to the slot: the
// slot may lag it (Postgres before 17 does not persist the slot at
// shutdown), but must never be ahead of it.
func printProgress(ctx context.Context, stdout io.Writer, cfg *config.Config) {
	rc, err := logrepl.Dial(ctx, cfg.Postgres, cfg.Outbox)
	if err != nil {
		fmt.Fprintf(stdout, "progress:      unknown (%v)\n", err)
		return
	}
	defer rc.Close()
	store, err := sink.OpenProgress(cfg.Kafka, false)
	if err != nil {
		fmt.Fprintf(stdout, "progress:      unknown (%v)\n", err)
		return
	}
	defer store.Close()
	loaded, err := store.Load(ctx, cfg.Postgres.Slot, rc.System.SystemID)
	switch {
	case err != nil:
		fmt.Fprintf(stdout, "progress:      unknown (%v)\n", err)
	case !loaded.Found:
		fmt.Fprintf(stdout, "progress:      no record for slot %s in system %s (topic %s)\n", cfg.Postgres.Slot, rc.System.SystemID, cfg.Kafka.ProgressTopic)
	default:
		r := loaded.Record
		fmt.Fprintf(stdout, "progress_lsn:  %s (written %s by relay %s, timeline %d, system %s, fingerprint %s)\n",
			r.LSN, r.Time.Format(time.RFC3339), r.Version, r.Timeline, r.SystemID, r.Fingerprint)
		if sn := r.Snapshot; sn != nil {
			fmt.Fprintf(stdout, "snapshot:      %s\n", describeSnapshot(sn))
		}
	}
}
