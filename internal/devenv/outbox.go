package devenv

import "fmt"

// OutboxDDL returns CREATE TABLE for an outbox with Debezium's Outbox Event
// Router layout, the shape `relay dev`, the tests and the benchmarks write to.
// table is used as written, so quote it as SQL needs.
func OutboxDDL(table string) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregatetype text NOT NULL,
	aggregateid text NOT NULL,
	type text NOT NULL,
	payload jsonb NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now())`, table)
}
