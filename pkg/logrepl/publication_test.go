package logrepl

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

func TestCreatePublicationSQL(t *testing.T) {
	pg := config.Postgres{Publication: `Evil'Pub"; DROP TABLE x; --`, Slot: "outbox_relay"}
	tables := []config.Table{{Table: "public.outbox"}, {Table: `"Billing"."Outbox"`}}
	got := CreatePublicationSQL(pg, tables)
	want := `CREATE PUBLICATION "Evil'Pub""; DROP TABLE x; --" FOR TABLE "public"."outbox", "Billing"."Outbox" WITH (publish = 'insert', publish_via_partition_root = true)`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := CreatePublicationSQL(config.Postgres{Publication: "p"}, nil); got != `CREATE PUBLICATION "p" WITH (publish = 'insert', publish_via_partition_root = true)` {
		t.Errorf("messages only: %s", got)
	}
}

func TestPublicationGapError(t *testing.T) {
	pg := config.Postgres{Publication: "outbox_relay", Slot: "outbox_relay"}
	err := publicationGapError(pg, []config.Table{{Table: "public.outbox"}}, "it was dropped")
	if !fault.IsFatal(err) || !errors.Is(err, ErrPublicationGap) {
		t.Fatalf("not a fatal publication gap: %v", err)
	}
	for _, want := range []string{"it was dropped", "without confirming the slot past that point",
		`CREATE PUBLICATION "outbox_relay" FOR TABLE "public"."outbox"`, "pg_drop_replication_slot('outbox_relay')",
		"relay replay --table public.outbox"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestPublicationMissing(t *testing.T) {
	cases := []struct {
		err  *pgconn.PgError
		want bool
	}{
		{&pgconn.PgError{Code: "42704", Message: `publication "outbox_relay" does not exist`}, true},
		{&pgconn.PgError{Code: "42704", Message: `type "x" does not exist`}, false},
		{&pgconn.PgError{Code: "42P01", Message: `publication "outbox_relay" does not exist`}, false},
	}
	for _, c := range cases {
		if got := publicationMissing(c.err); got != c.want {
			t.Errorf("%s %q: %t, want %t", c.err.Code, c.err.Message, got, c.want)
		}
	}
}
