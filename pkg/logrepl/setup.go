package logrepl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/decode"
	"github.com/relay-dev/relay/pkg/fault"
)

// SlotState is what pg_replication_slots says about the relay's slot.
type SlotState struct {
	Exists    bool
	Plugin    string
	Database  string
	Active    bool
	ActivePID int
	WALStatus string
	Confirmed pglogrepl.LSN
}

// ErrSlotLost means Postgres removed WAL the slot still needed: events written
// while the relay was away may never be relayed.
var ErrSlotLost = errors.New("replication slot is invalidated (wal_status = lost)")

// ReadSlot reads the slot's state on a regular connection.
func ReadSlot(ctx context.Context, conn *pgx.Conn, slot string) (SlotState, error) {
	var s SlotState
	var pid *int32
	var walStatus, database *string
	var confirmed *string
	err := conn.QueryRow(ctx, `SELECT plugin, database, active, active_pid, wal_status, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s.Plugin, &database, &s.Active, &pid, &walStatus, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading slot %s from pg_replication_slots: %w", slot, err)
	}
	s.Exists = true
	if pid != nil {
		s.ActivePID = int(*pid)
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if database != nil {
		s.Database = *database
	}
	if confirmed != nil {
		if s.Confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, err
		}
	}
	return s, nil
}

// Prepare checks the database can serve the relay, creates the publication
// when configured to, and returns the slot's state; creating a missing slot
// is the caller's decision, because only the progress record can tell a
// first start from a slot that was lost. Problems a human must fix are fatal;
// the rest (connection trouble) retryable.
func Prepare(ctx context.Context, pg config.Postgres, tables []config.Table, log logger) (SlotState, error) {
	// A blackholed host would otherwise hang here for the kernel's TCP
	// timeout; a bounded attempt turns it into a retry with a clear reason.
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL.Reveal())
	if err != nil {
		return SlotState{}, classify(fmt.Errorf("connecting to postgres %s: %s", pg.URL.Redacted(), pg.URL.RedactError(err)), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if err := CheckPrimary(ctx, conn.PgConn()); err != nil {
		return SlotState{}, err
	}
	if err := CheckWALLevel(ctx, conn); err != nil {
		return SlotState{}, err
	}
	if err := CheckRole(ctx, conn); err != nil {
		return SlotState{}, err
	}

	for _, t := range tables {
		if _, err := CheckTable(ctx, conn, t); err != nil {
			return SlotState{}, err
		}
	}
	if err := ensurePublication(ctx, conn, pg, tables, log); err != nil {
		return SlotState{}, err
	}

	st, err := ReadSlot(ctx, conn, pg.Slot)
	if err != nil {
		return st, classify(err, err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return st, classify(err, err)
	}
	if err := CheckSlot(st, pg, db); err != nil {
		return st, err
	}
	fo, err := ReadFailover(ctx, conn, pg.Slot)
	if err != nil {
		return SlotState{}, err
	}
	warnings, err := CheckFailover(fo, pg)
	if err != nil {
		return SlotState{}, err
	}
	if st.Active {
		// Another relay streams (a hot standby waits here), or Postgres has
		// not yet reaped a crashed instance's walsender. Saying so before
		// connecting to Kafka keeps a waiting standby cheap.
		return st, fmt.Errorf("%w (PID %d)", ErrSlotActive, st.ActivePID)
	}
	for _, w := range warnings {
		log.Warn().Str("slot", pg.Slot).Msg(w)
	}
	if st.Exists && pg.SlotFailover && !fo.SlotFailover {
		if err := enableFailover(ctx, pg); err != nil {
			return SlotState{}, err
		}
		log.Info().Str("slot", pg.Slot).Msg("made the replication slot a failover slot (postgres.slot_failover: true)")
	}
	return st, nil
}

// The checks below are shared by Prepare and `relay check`, so the start-up
// refusal and the checklist always agree. Each error names the fix.

// CheckWALLevel fails unless wal_level is logical.
func CheckWALLevel(ctx context.Context, conn *pgx.Conn) error {
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return classify(fmt.Errorf("reading wal_level: %w", err), err)
	}
	if walLevel != "logical" {
		return fault.Fatal(fmt.Errorf("postgres wal_level is %q, logical decoding needs wal_level = logical (ALTER SYSTEM SET wal_level = logical; then restart Postgres)", walLevel))
	}
	return nil
}

// CheckRole fails unless the connected role may stream changes.
func CheckRole(ctx context.Context, conn *pgx.Conn) error {
	var role string
	var super, repl bool
	if err := conn.QueryRow(ctx, "SELECT rolname, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user").Scan(&role, &super, &repl); err != nil {
		return classify(fmt.Errorf("reading role attributes: %w", err), err)
	}
	if !super && !repl {
		return fault.Fatal(fmt.Errorf("role %q lacks the REPLICATION privilege needed to stream changes (ALTER ROLE %s REPLICATION)", role, pgx.Identifier{role}.Sanitize()))
	}
	return nil
}

// CheckSlot reports what in the slot's state stops the relay. A missing slot
// is fine when the relay may create it.
func CheckSlot(st SlotState, pg config.Postgres, db string) error {
	switch {
	case !st.Exists && !pg.CreateSlot:
		return fault.Fatal(fmt.Errorf("replication slot %q does not exist and postgres.create_slot is false (SELECT pg_create_logical_replication_slot('%s', 'pgoutput'))", pg.Slot, pg.Slot))
	case !st.Exists:
		return nil
	case st.Plugin != "pgoutput":
		return fault.Fatal(fmt.Errorf("replication slot %q uses plugin %q, the relay needs pgoutput: drop it or set postgres.slot to another name", pg.Slot, st.Plugin))
	case st.Database != db:
		return fault.Fatal(fmt.Errorf("replication slot %q belongs to database %q, not %q: set postgres.slot to another name", pg.Slot, st.Database, db))
	case st.WALStatus == "lost":
		return fault.Fatal(fmt.Errorf("%w: slot %q: Postgres removed WAL it still needed (max_slot_wal_keep_size) or, on PostgreSQL 18, dropped its reservation after idle_replication_slot_timeout without a consumer, so outbox events committed while the relay was behind may be lost. The relay will not recreate the slot silently. To recover: compare the outbox table with Kafka to find missing events, then drop the slot (SELECT pg_drop_replication_slot('%s')) and start the relay again to create a fresh one", ErrSlotLost, pg.Slot, pg.Slot))
	}
	return nil
}

// CheckTable fails unless the outbox table exists with every mapped column.
// It returns the table's columns and their types (format_type).
func CheckTable(ctx context.Context, conn *pgx.Conn, t config.Table) (map[string]string, error) {
	schema, name, err := config.SplitTable(t.Table)
	if err != nil {
		return nil, fault.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, schema, name)
	if err != nil {
		return nil, classify(fmt.Errorf("reading columns of %s: %w", t.Table, err), err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var c [2]string
		err := r.Scan(&c[0], &c[1])
		return c, err
	})
	if err != nil {
		return nil, classify(fmt.Errorf("reading columns of %s: %w", t.Table, err), err)
	}
	if len(cols) == 0 {
		return nil, fault.Fatal(fmt.Errorf("outbox table %s does not exist (or the relay's role cannot see it)", t.Table))
	}
	have := map[string]string{}
	for _, c := range cols {
		have[c[0]] = c[1]
	}
	var missing []string
	check := func(key, col string) {
		if _, ok := have[col]; col != "" && !ok {
			missing = append(missing, fmt.Sprintf("%q (outbox.columns.%s)", col, key))
		}
	}
	check("id", t.Columns.ID)
	check("key", t.Columns.Key)
	check("payload", t.Columns.Payload)
	check("route_by", t.Columns.RouteBy)
	check("type", t.Columns.Type)
	check("timestamp", t.Columns.Timestamp)
	if _, ok := have[t.PartitionColumn]; t.PartitionColumn != "" && !ok && t.OnMissingColumn != config.OnMissingColumnIgnore {
		missing = append(missing, fmt.Sprintf("%q (outbox.partition_column)", t.PartitionColumn))
	}
	if t.OnMissingColumn != config.OnMissingColumnIgnore {
		for col := range t.Headers {
			if _, ok := have[col]; !ok {
				missing = append(missing, fmt.Sprintf("%q (outbox.headers)", col))
			}
		}
	}
	if len(missing) > 0 {
		return have, fault.Fatal(fmt.Errorf("outbox table %s has no column %s", t.Table, strings.Join(missing, ", ")))
	}
	var bad []string
	judge := func(role decode.Role, key, col string) {
		// Whether a column may be missing was decided above
		// (on_missing_column); only present ones have a type to judge.
		typ, ok := have[col]
		if col == "" || !ok {
			return
		}
		if err := decode.ColumnTypeOK(role, typ); err != nil {
			bad = append(bad, fmt.Sprintf("column %q (outbox.%s) %v", col, key, err))
		}
	}
	judge(decode.RoleID, "columns.id", t.Columns.ID)
	judge(decode.RoleKey, "columns.key", t.Columns.Key)
	judge(decode.RolePayload, "columns.payload", t.Columns.Payload)
	judge(decode.RoleRouteBy, "columns.route_by", t.Columns.RouteBy)
	judge(decode.RoleType, "columns.type", t.Columns.Type)
	judge(decode.RoleTimestamp, "columns.timestamp", t.Columns.Timestamp)
	judge(decode.RolePartition, "partition_column", t.PartitionColumn)
	for col := range t.Headers {
		judge(decode.RoleHeader, "headers", col)
	}
	if len(bad) > 0 {
		return have, fault.Fatal(fmt.Errorf("outbox table %s: %s: %w", t.Table, strings.Join(bad, "; "), ErrColumnType))
	}
	return have, nil
}

// ErrColumnType means a mapped column's type is not one its role accepts
// (decode.ColumnTypeOK).
var ErrColumnType = errors.New("change the column's type (ALTER TABLE ... ALTER COLUMN ... TYPE ...) or map that role to a column of a usable type")

func quotedTable(t config.Table) string {
	schema, name, _ := config.SplitTable(t.Table)
	return pgx.Identifier{schema, name}.Sanitize()
}

// classify marks Postgres errors that a retry cannot fix as fatal: bad
// credentials, missing privileges or objects. Connection trouble stays
// retryable. wrapped is returned, cause is inspected.
func classify(wrapped, cause error) error {
	var pgErr *pgconn.PgError
	if errors.As(cause, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "28"), // invalid authorization
			pgErr.Code == "42501", // insufficient privilege
			pgErr.Code == "3D000", // database does not exist
			pgErr.Code == "42P01", pgErr.Code == "42704":
			return fault.Fatal(wrapped)
		}
	}
	return wrapped
}
