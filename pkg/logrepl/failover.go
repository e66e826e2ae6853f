package logrepl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

// FailoverSlotsVersion is the first PostgreSQL major version whose logical
// slots can be synchronized to a physical standby and survive its promotion.
const FailoverSlotsVersion = 17

// ErrStandby means the relay reached a server in recovery: it can neither
// create the relay's slot nor stream from a synchronized one until it is
// promoted. Retryable: during a failover this is the standby about to
// become the primary.
var ErrStandby = errors.New("postgres server is a standby (in recovery)")

// Failover is what the server says about failover slots.
type Failover struct {
	// Major is the server's major version (15, 16, ...).
	Major int
	// Supported: PostgreSQL 17 or later.
	Supported bool
	// SlotFailover and SlotSynced are the slot's failover and synced
	// columns (false before 17 or when the slot does not exist).
	SlotFailover, SlotSynced bool
	// StandbySlots is synchronized_standby_slots ("" when unset or
	// unsupported): the physical slots whose standbys must have the WAL
	// before a logical walsender sends it.
	StandbySlots string
	// StandbySlotsAway lists the synchronized_standby_slots entries that
	// are not an active physical slot (missing, logical, or no standby
	// connected): Postgres holds every failover slot back until they are.
	StandbySlotsAway []string
	// PhysicalStandbys counts physical slots and connected physical
	// walsenders: a hint that this server has standbys to fail over to.
	PhysicalStandbys int
}

// ReadFailover reads the failover state of the server and of the slot on a
// regular connection. The columns and settings it reads exist from
// PostgreSQL 17 on, so older servers are asked only for their version.
func ReadFailover(ctx context.Context, conn *pgx.Conn, slot string) (Failover, error) {
	var f Failover
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return f, classify(fmt.Errorf("reading server_version_num: %w", err), err)
	}
	f.Major = num / 10000
	f.Supported = f.Major >= FailoverSlotsVersion
	// Physical slots and physical walsenders (those not serving a logical
	// slot) are visible to every role.
	// A physical walsender holds a physical slot or none; a logical one
	// always holds its slot.
	err := conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'physical')::int +
		(SELECT count(*) FROM pg_stat_replication r WHERE NOT EXISTS
			(SELECT 1 FROM pg_replication_slots s WHERE s.active_pid = r.pid))::int`).Scan(&f.PhysicalStandbys)
	if err != nil {
		return f, classify(fmt.Errorf("counting physical standbys: %w", err), err)
	}
	if !f.Supported {
		return f, nil
	}
	err = conn.QueryRow(ctx, "SELECT coalesce(current_setting('synchronized_standby_slots', true), '')").Scan(&f.StandbySlots)
	if err != nil {
		return f, classify(fmt.Errorf("reading synchronized_standby_slots: %w", err), err)
	}
	if f.StandbySlots != "" {
		// The setting is a comma-separated list of slot names, which are
		// plain [a-z0-9_] identifiers.
		err = conn.QueryRow(ctx, `SELECT coalesce(array_agg(n ORDER BY n), '{}') FROM unnest(string_to_array(replace($1, ' ', ''), ',')) n
			WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.slot_name = n AND s.slot_type = 'physical' AND s.active)`,
			f.StandbySlots).Scan(&f.StandbySlotsAway)
		if err != nil {
			return f, classify(fmt.Errorf("reading the slots of synchronized_standby_slots: %w", err), err)
		}
	}
	err = conn.QueryRow(ctx, "SELECT failover, synced FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&f.SlotFailover, &f.SlotSynced)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return f, classify(fmt.Errorf("reading slot %s from pg_replication_slots: %w", slot, err), err)
	}
	return f, nil
}

// CheckPrimary fails, retryably, when the server is in recovery. conn may be
// a regular or a logical replication connection, which also runs SQL.
func CheckPrimary(ctx context.Context, conn *pgconn.PgConn) error {
	res, err := conn.Exec(ctx, "SELECT pg_is_in_recovery()").ReadAll()
	if err != nil {
		return classify(fmt.Errorf("reading pg_is_in_recovery(): %w", err), err)
	}
	if len(res) == 1 && len(res[0].Rows) == 1 && string(res[0].Rows[0][0]) == "t" {
		return fmt.Errorf("%w at %s: waiting for it to be promoted; to follow the primary among several hosts, list them all in postgres.url with target_session_attrs=read-write",
			ErrStandby, conn.Conn().RemoteAddr())
	}
	return nil
}

// CheckFailover judges the failover state against postgres.slot_failover:
// a fatal error when it cannot be honoured, warnings for the risks.
func CheckFailover(f Failover, pg config.Postgres) (warnings []string, err error) {
	if pg.SlotFailover && !f.Supported {
		return nil, fault.Fatal(fmt.Errorf("postgres.slot_failover is true, but this server is PostgreSQL %d: failover slots need PostgreSQL %d or later (set postgres.slot_failover: false, and expect to recreate the slot after a failover)", f.Major, FailoverSlotsVersion))
	}
	if !f.Supported {
		return nil, nil
	}
	failover := f.SlotFailover || pg.SlotFailover
	switch {
	case !failover && !pg.SlotFailover && f.PhysicalStandbys > 0:
		warnings = append(warnings, fmt.Sprintf("slot %q is not a failover slot, but this PostgreSQL %d server has %d physical standby(s): after a failover to one of them the slot is missing there and the relay stops; set postgres.slot_failover: true (and sync_replication_slots = on on the standbys)", pg.Slot, f.Major, f.PhysicalStandbys))
	case failover && f.StandbySlots == "":
		warnings = append(warnings, fmt.Sprintf("slot %q is a failover slot, but synchronized_standby_slots is empty on the primary: the relay can receive, and publish to Kafka, transactions a standby does not have yet, and after a failover to that standby those events are phantoms (in Kafka, never committed on the new primary); set synchronized_standby_slots to the standbys' physical slots", pg.Slot))
	case failover && len(f.StandbySlotsAway) > 0:
		warnings = append(warnings, fmt.Sprintf("synchronized_standby_slots lists %s, which is not an active physical slot (missing, or its standby is not connected): Postgres sends the relay nothing past what that standby has, so the relay stalls until it is back; remove it from synchronized_standby_slots if that standby is gone", strings.Join(f.StandbySlotsAway, ", ")))
	}
	return warnings, nil
}

// enableFailover turns an existing slot into a failover slot. Only the
// replication protocol can (ALTER_REPLICATION_SLOT, PostgreSQL 17), and only
// while no one streams from it.
func enableFailover(ctx context.Context, pg config.Postgres) error {
	connURL, err := replicationURL(pg.URL.Reveal())
	if err != nil {
		return fault.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	conn, err := pgconn.Connect(cctx, connURL)
	if err != nil {
		return classify(fmt.Errorf("replication connection to %s: %s", pg.URL.Redacted(), pg.URL.RedactError(err)), err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	sql := "ALTER_REPLICATION_SLOT " + pgx.Identifier{pg.Slot}.Sanitize() + " (FAILOVER true)"
	if _, err := conn.Exec(cctx, sql).ReadAll(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" {
			return fmt.Errorf("%w: %s", ErrSlotActive, pgErr.Message)
		}
		return classify(fmt.Errorf("making slot %q a failover slot (%s): %w", pg.Slot, sql, err), err)
	}
	return nil
}

// exportSlotOptions are CREATE_REPLICATION_SLOT's options after the plugin
// for a slot with an exported snapshot. FAILOVER exists only in the
// parenthesized syntax (PostgreSQL 15+, and 17+ for FAILOVER).
func exportSlotOptions(pg config.Postgres) string {
	if pg.SlotFailover {
		return "(SNAPSHOT 'export', FAILOVER true)"
	}
	return "EXPORT_SNAPSHOT"
}
