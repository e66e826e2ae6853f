package logrepl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

// PublicationState is what the catalogs say about the relay's publication.
type PublicationState struct {
	Exists  bool
	Inserts bool // publishes inserts
	Updates bool // publishes updates, which on_update needs to see
	ViaRoot bool // publish_via_partition_root
	// Missing are outbox tables the publication does not contain.
	Missing []config.Table
	// Partitioned are outbox tables that are partitioned: without ViaRoot
	// their rows arrive under the partitions' names, which the relay does
	// not know.
	Partitioned []config.Table
	// Filtered are outbox tables published with a row filter (WHERE):
	// the rows it leaves out are never sent, so never relayed.
	Filtered []config.Table
}

// ReadPublication reads the publication's state on a regular connection, in
// one round trip: the watch repeats it every few seconds.
func ReadPublication(ctx context.Context, conn *pgx.Conn, name string, tables []config.Table) (PublicationState, error) {
	var ps PublicationState
	b := &pgx.Batch{}
	b.Queue("SELECT pubinsert, pubupdate, pubviaroot FROM pg_publication WHERE pubname = $1", name)
	for _, t := range tables {
		schema, table, _ := config.SplitTable(t.Table)
		// Membership is read from pg_publication_rel (and FOR ALL TABLES /
		// FOR TABLES IN SCHEMA), not pg_publication_tables: that view lists
		// a partitioned table's leaf partitions instead of the table itself
		// unless publish_via_partition_root is on, so a member would look
		// missing and ADD TABLE would fail with "already member". A table
		// is also published through a published ancestor (it is then a
		// partition itself).
		b.Queue(`SELECT c.relkind = 'p',
				EXISTS (SELECT 1 FROM pg_publication_rel pr
					WHERE pr.prpubid = p.oid AND pr.prrelid = c.oid AND pr.prqual IS NOT NULL),
				p.puballtables
				OR EXISTS (SELECT 1 FROM pg_publication_rel pr
					WHERE pr.prpubid = p.oid AND (pr.prrelid = c.oid OR pr.prrelid IN (SELECT relid FROM pg_partition_ancestors(c.oid))))
				OR EXISTS (SELECT 1 FROM pg_publication_namespace pn
					WHERE pn.pnpubid = p.oid AND pn.pnnspid = c.relnamespace)
			FROM pg_publication p, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE p.pubname = $1 AND n.nspname = $2 AND c.relname = $3`,
			name, schema, table)
	}
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	fail := func(err error) (PublicationState, error) {
		return PublicationState{}, classify(fmt.Errorf("reading publication %q: %w", name, err), err)
	}
	err := br.QueryRow().Scan(&ps.Inserts, &ps.Updates, &ps.ViaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := br.Close(); err != nil {
			return fail(err)
		}
		return PublicationState{}, nil
	}
	if err != nil {
		return fail(err)
	}
	ps.Exists = true
	for _, t := range tables {
		var in, partitioned, filtered bool
		err := br.QueryRow().Scan(&partitioned, &filtered, &in)
		if errors.Is(err, pgx.ErrNoRows) {
			// No such table (CheckTable names it): it is not in the
			// publication either.
			ps.Missing = append(ps.Missing, t)
			continue
		}
		if err != nil {
			return fail(err)
		}
		if !in {
			ps.Missing = append(ps.Missing, t)
		}
		if partitioned {
			ps.Partitioned = append(ps.Partitioned, t)
		}
		if filtered {
			ps.Filtered = append(ps.Filtered, t)
		}
	}
	if err := br.Close(); err != nil {
		return fail(err)
	}
	return ps, nil
}

// publishOps is the publish option the relay creates its publication with.
func publishOps(tables []config.Table) string {
	for _, t := range tables {
		if t.WantsUpdates() {
			return "insert, update"
		}
	}
	return "insert"
}

// CreatePublicationSQL is the statement the relay creates its publication
// with, also quoted in error messages as the fix. publish_via_partition_root
// makes rows of a partitioned outbox table arrive under the table's own name,
// the configured one, instead of their partition's; for other tables it
// changes nothing.
func CreatePublicationSQL(pg config.Postgres, tables []config.Table) string {
	var names []string
	for _, t := range tables {
		names = append(names, quotedTable(t))
	}
	sql := "CREATE PUBLICATION " + pgx.Identifier{pg.Publication}.Sanitize()
	if len(names) > 0 {
		// Only logical messages otherwise: they flow whatever the
		// publication holds.
		sql += " FOR TABLE " + strings.Join(names, ", ")
	}
	return sql + " WITH (publish = '" + publishOps(tables) + "', publish_via_partition_root = true)"
}

// viaRootFix is the statement that makes an existing publication publish
// partitioned tables under their own names.
func viaRootFix(pg config.Postgres) string {
	return "ALTER PUBLICATION " + pgx.Identifier{pg.Publication}.Sanitize() + " SET (publish_via_partition_root = true)"
}

func tableNames(tables []config.Table) string {
	var names []string
	for _, t := range tables {
		names = append(names, t.Table)
	}
	return strings.Join(names, ", ")
}

// ErrViaRoot means a partitioned outbox table is in a publication without
// publish_via_partition_root: its rows would arrive under the partitions'
// names and never be relayed.
var ErrViaRoot = errors.New("publication does not publish via the partition root")

func viaRootError(pg config.Postgres, ps PublicationState) error {
	return fault.Fatal(fmt.Errorf("%w: outbox table %s is partitioned and publication %q has publish_via_partition_root off, so its rows would arrive under the partitions' names and never be relayed: %s",
		ErrViaRoot, tableNames(ps.Partitioned), pg.Publication, viaRootFix(pg)))
}

// ErrPublicationGap means the publication was dropped (or never existed)
// for part of the WAL the slot still has to decode: changes there cannot be
// decoded through it, and confirming past them would lose them silently.
var ErrPublicationGap = errors.New("gap in the publication")

// publicationGapError explains what happened and the ways on. what says how
// the relay found out.
func publicationGapError(pg config.Postgres, tables []config.Table, what string) error {
	replay := "relay replay --table <table> --where \"<rows committed since the drop>\""
	if len(tables) > 0 {
		replay = "relay replay --table " + tables[0].Table + " --where \"<rows committed since the drop>\""
	}
	return fault.Fatal(fmt.Errorf("%w: %s. The relay stopped without confirming the slot past that point. "+
		"Ways on: (1) recreate the publication: %s; if nothing was committed while it was missing, the relay then carries on and nothing is lost. "+
		"(2) Otherwise the relay stops here again, because changes committed while it was missing cannot be decoded through any publication: "+
		"accept the gap explicitly by dropping the slot (SELECT pg_drop_replication_slot('%s')) and starting the relay once with postgres.on_slot_lost: recreate (RELAY_POSTGRES_ON_SLOT_LOST=recreate), so that it creates a new slot at the current position, "+
		"and replay the outbox rows committed in the gap from the table (%s), or accept that they are not relayed",
		ErrPublicationGap, what, CreatePublicationSQL(pg, tables), pg.Slot, replay))
}

func ensurePublication(ctx context.Context, conn *pgx.Conn, pg config.Postgres, tables []config.Table, log logger) error {
	pub := pgx.Identifier{pg.Publication}.Sanitize()
	ps, err := ReadPublication(ctx, conn, pg.Publication, tables)
	if err != nil {
		return err
	}
	if !ps.Exists {
		if !pg.CreatePublication {
			return fault.Fatal(fmt.Errorf("publication %q does not exist and postgres.create_publication is false: have the table owner run %s", pg.Publication, CreatePublicationSQL(pg, tables)))
		}
		// A slot that already exists has WAL to decode from before now,
		// which a publication created now does not cover: on PostgreSQL 15
		// to 17 the walsender fails on it for ever, on 18 it skips the
		// changes with a warning. Either way creating it and carrying on
		// would hide the gap. A slot the relay cannot use at all (another
		// plugin or database) is CheckSlot's to report.
		var slotExists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots
			WHERE slot_name = $1 AND plugin = 'pgoutput' AND database = current_database())`, pg.Slot).Scan(&slotExists); err != nil {
			return classify(fmt.Errorf("reading slot %s from pg_replication_slots: %w", pg.Slot, err), err)
		}
		if slotExists {
			return publicationGapError(pg, tables, fmt.Sprintf("publication %q does not exist, but replication slot %q does: the publication was dropped after the slot was created, and the relay does not recreate it silently", pg.Publication, pg.Slot))
		}
		sql := CreatePublicationSQL(pg, tables)
		if _, err := conn.Exec(ctx, sql); err != nil {
			return classify(fmt.Errorf("creating publication %q (%s): %w", pg.Publication, sql, err), err)
		}
		log.Info().Str("publication", pg.Publication).Str("sql", sql).Msg("created publication")
		return nil
	}
	if !ps.ViaRoot && len(ps.Partitioned) > 0 {
		return viaRootError(pg, ps)
	}
	for _, t := range ps.Missing {
		if !pg.CreatePublication {
			return fault.Fatal(fmt.Errorf("outbox table %s is not in publication %q: ALTER PUBLICATION %s ADD TABLE %s", t.Table, pg.Publication, pub, quotedTable(t)))
		}
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" ADD TABLE "+quotedTable(t)); err != nil {
			return classify(fmt.Errorf("adding %s to publication %q: %w", t.Table, pg.Publication, err), err)
		}
		// Rows the slot has yet to decode from before now are not in the
		// publication as of their commit, so the stream never carries them:
		// right for a table new to the configuration (the initial snapshot
		// publishes what it holds), a gap for one that was taken out of the
		// publication by hand.
		log.Warn().Str("publication", pg.Publication).Str("table", t.Table).
			Msg("added table to publication; its rows committed before now, if any, are not streamed (with snapshot.mode initial the snapshot publishes those still in the table)")
	}
	if !ps.Inserts {
		return fault.Fatal(fmt.Errorf("publication %q does not publish inserts: ALTER PUBLICATION %s SET (publish = 'insert')", pg.Publication, pub))
	}
	if len(ps.Filtered) > 0 {
		log.Warn().Str("publication", pg.Publication).Str("tables", tableNames(ps.Filtered)).
			Msg("the publication has a row filter (WHERE) on these outbox tables: rows it leaves out are never sent to the relay, so never relayed")
	}
	if !ps.Updates {
		var blind []string
		for _, t := range tables {
			if t.WantsUpdates() {
				blind = append(blind, t.Table+" (on_update: "+string(t.OnUpdate)+")")
			}
		}
		if len(blind) > 0 {
			log.Warn().Str("publication", pg.Publication).Strs("tables", blind).
				Msgf("publication does not publish updates, so UPDATEs on these outbox tables cannot be detected: ALTER PUBLICATION %s SET (publish = 'insert, update')", pub)
		}
	}
	return nil
}

// CheckPublication verifies, while the relay streams, that the publication
// still exists, contains every outbox table, publishes inserts and, for
// partitioned tables, publishes via the root. Anything else means changes
// may already be going by unpublished: it is fatal.
func CheckPublication(ctx context.Context, conn *pgx.Conn, pg config.Postgres, tables []config.Table) error {
	ps, err := ReadPublication(ctx, conn, pg.Publication, tables)
	if err != nil {
		return err
	}
	pub := pgx.Identifier{pg.Publication}.Sanitize()
	switch {
	case !ps.Exists:
		return publicationGapError(pg, tables, fmt.Sprintf("publication %q was dropped while the relay streamed", pg.Publication))
	case !ps.Inserts:
		return fault.Fatal(fmt.Errorf("%w: publication %q stopped publishing inserts while the relay streamed, so outbox rows committed since are not sent to it: ALTER PUBLICATION %s SET (publish = '%s'); those rows cannot be decoded through it: replay them from the table (relay replay --table ... --where ...)",
			ErrPublicationGap, pg.Publication, pub, publishOps(tables)))
	case len(ps.Missing) > 0:
		var add []string
		for _, t := range ps.Missing {
			add = append(add, quotedTable(t))
		}
		return fault.Fatal(fmt.Errorf("%w: outbox table %s was removed from publication %q while the relay streamed, so its rows committed since are not sent to it: ALTER PUBLICATION %s ADD TABLE %s; those rows cannot be decoded through it: replay them from the table (relay replay --table %s --where ...)",
			ErrPublicationGap, tableNames(ps.Missing), pg.Publication, pub, strings.Join(add, ", "), ps.Missing[0].Table))
	case !ps.ViaRoot && len(ps.Partitioned) > 0:
		return viaRootError(pg, ps)
	}
	return nil
}
