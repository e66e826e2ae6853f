package logrepl

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/pkg/config"
)

// ExportedSlot is a slot just created over the replication protocol with an
// exported snapshot: a transaction that imports SnapshotName sees exactly the
// transactions that commit before ConsistentPoint, and the slot streams
// exactly those that commit after it.
type ExportedSlot struct {
	ConsistentPoint pglogrepl.LSN
	SnapshotName    string
	conn            *pgconn.PgConn
}

// CreateSlotExporting creates the relay's slot with an exported snapshot. The
// snapshot stays importable until Release: Postgres drops it as soon as the
// creating connection runs another command or closes.
func CreateSlotExporting(ctx context.Context, pg config.Postgres) (*ExportedSlot, error) {
	connURL, err := replicationURL(pg.URL.Reveal())
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	conn, err := pgconn.Connect(cctx, connURL)
	if err != nil {
		return nil, classify(fmt.Errorf("replication connection to %s: %s", pg.URL.Redacted(), pg.URL.RedactError(err)), err)
	}
	// The slot name is limited to [a-z0-9_] by config validation, so it needs
	// no quoting in the replication command.
	res, err := pglogrepl.CreateReplicationSlot(cctx, conn, pg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: exportSlotOptions(pg)})
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, classify(fmt.Errorf("creating replication slot %q with an exported snapshot: %w", pg.Slot, err), err)
	}
	cp, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("creating replication slot %q: consistent point %q: %w", pg.Slot, res.ConsistentPoint, err)
	}
	return &ExportedSlot{ConsistentPoint: cp, SnapshotName: res.SnapshotName, conn: conn}, nil
}

// Release ends the snapshot's export (a transaction that already imported it
// keeps it) and closes the connection.
func (e *ExportedSlot) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.conn.Close(ctx)
}
