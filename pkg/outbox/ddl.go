package outbox

import (
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relay-dev/relay/internal/ident"
)

// partitionColumn is the time column of the tables CreateTable makes: the
// Timestamp column when mapped, else created_at.
func (w *Writer) partitionColumn() string {
	if w.t.Columns.Timestamp != "" {
		return w.t.Columns.Timestamp
	}
	return "created_at"
}

func (w *Writer) columnsDDL() string {
	q := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	c := w.t.Columns
	var b strings.Builder
	fmt.Fprintf(&b, "\t%s uuid NOT NULL,\n", q(c.ID))
	fmt.Fprintf(&b, "\t%s text NOT NULL,\n", q(c.RouteBy))
	fmt.Fprintf(&b, "\t%s text,\n", q(c.Key))
	fmt.Fprintf(&b, "\t%s text,\n", q(c.Type))
	fmt.Fprintf(&b, "\t%s jsonb,\n", q(c.Payload))
	if w.t.TraceColumn != "" {
		fmt.Fprintf(&b, "\t%s text,\n", q(w.t.TraceColumn))
	}
	fmt.Fprintf(&b, "\t%s timestamptz NOT NULL DEFAULT now()", q(w.partitionColumn()))
	return b.String()
}

// CreateTable returns CREATE TABLE IF NOT EXISTS for the writer's table with
// the mapped columns (Debezium's layout by default), the trace column if
// set, and a created_at (or Columns.Timestamp) column. Columns for Extra are
// the caller's to add.
func (w *Writer) CreateTable() string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n%s,\n\tPRIMARY KEY (%s)\n)",
		w.ident, w.columnsDDL(), pgx.Identifier{w.t.Columns.ID}.Sanitize())
}

// CreatePartitionedTable returns the table of CreateTable partitioned by
// range of its time column, so that retention is a DROP of old partitions
// rather than a DELETE and the vacuum behind it. Postgres requires the
// partition column in the primary key, so ids are unique per partition
// only; UUIDv7 ids do not collide anyway. Create partitions with
// CreatePartition before writing into their range. The relay must see the
// rows under this table's name: the publication needs
// publish_via_partition_root = true (the relay sets it on a publication it
// creates).
func (w *Writer) CreatePartitionedTable() string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n%s,\n\tPRIMARY KEY (%s, %s)\n) PARTITION BY RANGE (%s)",
		w.ident, w.columnsDDL(), pgx.Identifier{w.t.Columns.ID}.Sanitize(),
		pgx.Identifier{w.partitionColumn()}.Sanitize(), pgx.Identifier{w.partitionColumn()}.Sanitize())
}

// CreatePartition returns CREATE TABLE IF NOT EXISTS for the partition of a
// CreatePartitionedTable table holding [from, to), named
// <table>_p<from as YYYYMMDDHH> in UTC, in the table's schema.
func (w *Writer) CreatePartition(from, to time.Time) string {
	schema, table, _ := ident.Table(w.t.Name) // checked by New
	name := fmt.Sprintf("%s_p%s", table, from.UTC().Format("2006010215"))
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
		pgx.Identifier{schema, name}.Sanitize(), w.ident,
		from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))
}
