package snapshot

import (
	"testing"

	"github.com/relay-dev/relay/pkg/config"
)

func TestQuery(t *testing.T) {
	cases := []struct {
		table, orderBy, where, want string
	}{
		{"outbox", "", "", `SELECT * FROM "public"."outbox"`},
		{`app."Events"`, `created_at, "Id"`, "", `SELECT * FROM "app"."Events" ORDER BY "created_at", "Id"`},
		{"outbox", "", "aggregatetype = 'A'", `SELECT * FROM "public"."outbox" WHERE (aggregatetype = 'A') ORDER BY ctid`},
		{"outbox", "seq", "seq > 10", `SELECT * FROM "public"."outbox" WHERE (seq > 10) ORDER BY "seq"`},
	}
	for _, c := range cases {
		got, err := query(config.Table{Table: c.table}, c.orderBy, c.where)
		if err != nil || got != c.want {
			t.Errorf("query(%s, %q, %q) = %s, %v; want %s", c.table, c.orderBy, c.where, got, err, c.want)
		}
	}
	if _, err := query(config.Table{Table: "outbox"}, "a; drop table x", ""); err == nil {
		t.Error("an order_by that is not a column list was accepted")
	}
}
