package logrepl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/internal/netio"
	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

// ReplConn is an open replication connection and what IDENTIFY_SYSTEM said
// about the server behind it: the system identifier names the database
// cluster (a physical standby shares it, a restored dump does not) and the
// timeline moves on every promotion.
type ReplConn struct {
	conn   *pgconn.PgConn
	System pglogrepl.IdentifySystemResult
	gap    error // set once the walsender says the publication is missing
}

// Dial opens a replication connection and identifies the server. tables
// are named in the fix should the publication turn out to be missing.
func Dial(ctx context.Context, pg config.Postgres, tables []config.Table) (*ReplConn, error) {
	connURL, err := replicationURL(pg.URL.Reveal())
	if err != nil {
		return nil, fault.Fatal(err)
	}
	connCfg, err := pgconn.ParseConfig(connURL)
	if err != nil {
		return nil, fault.Fatal(fmt.Errorf("postgres.url: %s", pg.URL.RedactError(err)))
	}
	// The stream's reads are the relay's most frequent system calls.
	connCfg.DialFunc = netio.DialFunc(connCfg.DialFunc)
	c := &ReplConn{}
	// PostgreSQL 18's walsender does not fail when the publication is
	// missing at a point of the WAL: it warns and skips the changes. The
	// warning is the only sign of the gap, so it stops the stream before
	// anything past it can be confirmed. pgconn calls this from within the
	// reads of the goroutine that owns the connection.
	connCfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if c.gap == nil && strings.HasPrefix(n.Message, "skipped loading publication") {
			c.gap = publicationGapError(pg, tables, fmt.Sprintf("the walsender warned %q (%s%s): publication %q does not exist at that point of the WAL, it was dropped, and PostgreSQL skips every change there",
				n.Message, n.Detail, where(n.Where), pg.Publication))
		}
	}
	cctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, connCfg)
	if err != nil {
		return nil, classify(fmt.Errorf("replication connection to %s: %s", pg.URL.Redacted(), pg.URL.RedactError(err)), err)
	}
	// Without target_session_attrs, or between Prepare and here, this can
	// be a standby: on PostgreSQL 16+ it would decode from a local slot of
	// the same name, or refuse a synchronized one.
	if err := CheckPrimary(cctx, conn); err != nil {
		conn.Close(context.WithoutCancel(cctx))
		return nil, err
	}
	sys, err := pglogrepl.IdentifySystem(cctx, conn)
	if err != nil {
		conn.Close(context.WithoutCancel(cctx))
		return nil, classify(fmt.Errorf("IDENTIFY_SYSTEM: %w", err), err)
	}
	c.conn, c.System = conn, sys
	return c, nil
}

// Close closes the connection, waiting at most a moment for a clean goodbye.
func (c *ReplConn) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.conn.Close(ctx)
}

// SlotOptions are the options of CREATE_REPLICATION_SLOT.
type SlotOptions struct {
	// ExportSnapshot keeps a snapshot of the consistent point open, named in
	// the result, until the next command on this connection.
	ExportSnapshot bool
	Failover       bool // PostgreSQL 17+: synchronise the slot to standbys
}

// CreatedSlot is CREATE_REPLICATION_SLOT's answer.
type CreatedSlot struct {
	// ConsistentPoint is where decoding starts: every transaction committing
	// after it is streamed, none before it.
	ConsistentPoint pglogrepl.LSN
	SnapshotName    string
}

// CreateSlot creates the relay's pgoutput slot.
func (c *ReplConn) CreateSlot(ctx context.Context, slot string, o SlotOptions) (CreatedSlot, error) {
	opts := []string{"SNAPSHOT 'nothing'"}
	if o.ExportSnapshot {
		opts[0] = "SNAPSHOT 'export'"
	}
	if o.Failover {
		opts = append(opts, "FAILOVER")
	}
	// Slot names are validated as [a-z0-9_] by config: no quoting needed.
	sql := fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (%s)", slot, strings.Join(opts, ", "))
	res, err := pglogrepl.ParseCreateReplicationSlot(c.conn.Exec(ctx, sql))
	if err != nil {
		return CreatedSlot{}, classify(fmt.Errorf("creating replication slot %q: %w", slot, err), err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return CreatedSlot{}, fmt.Errorf("creating replication slot %q: consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	return CreatedSlot{ConsistentPoint: lsn, SnapshotName: res.SnapshotName}, nil
}
