package logrepl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

func TestCheckFailover(t *testing.T) {
	off := config.Postgres{Slot: "s"}
	on := config.Postgres{Slot: "s", SlotFailover: true}
	pg17 := Failover{Major: 17, Supported: true}
	for _, c := range []struct {
		name  string
		f     Failover
		pg    config.Postgres
		fatal string // substring of the fatal error
		warn  string // substring of the only warning, "" for none
	}{
		{"16, off", Failover{Major: 16}, off, "", ""},
		{"16, off, standbys", Failover{Major: 16, PhysicalStandbys: 1}, off, "", ""},
		{"16, on", Failover{Major: 16}, on, "postgres.slot_failover is true, but this server is PostgreSQL 16", ""},
		{"17, off, no standby", pg17, off, "", ""},
		{"17, off, standbys", Failover{Major: 17, Supported: true, PhysicalStandbys: 2}, off, "", "has 2 physical standby(s)"},
		{"17, on, no synchronized_standby_slots", pg17, on, "", "phantoms"},
		{"17, failover slot but key off", Failover{Major: 17, Supported: true, SlotFailover: true}, off, "", "phantoms"},
		{"17, on, synchronized", Failover{Major: 17, Supported: true, SlotFailover: true, StandbySlots: "sb"}, on, "", ""},
		{"17, on, standby away", Failover{Major: 17, Supported: true, SlotFailover: true, StandbySlots: "sb,sc", StandbySlotsAway: []string{"sc"}}, on, "", "lists sc, which is not an active physical slot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			warnings, err := CheckFailover(c.f, c.pg)
			if c.fatal != "" {
				if err == nil || !fault.IsFatal(err) || !strings.Contains(err.Error(), c.fatal) {
					t.Fatalf("err = %v, want fatal with %q", err, c.fatal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.warn == "" && len(warnings) != 0:
				t.Errorf("warnings %q, want none", warnings)
			case c.warn != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], c.warn)):
				t.Errorf("warnings %q, want one with %q", warnings, c.warn)
			}
		})
	}
}

func TestExportSlotOptions(t *testing.T) {
	if got := exportSlotOptions(config.Postgres{}); got != "EXPORT_SNAPSHOT" {
		t.Errorf("without failover: %q", got)
	}
	if got := exportSlotOptions(config.Postgres{SlotFailover: true}); got != "(SNAPSHOT 'export', FAILOVER true)" {
		t.Errorf("with failover: %q", got)
	}
}

// Both of the relay's connections follow the primary among several hosts:
// the replication URL keeps every host and target_session_attrs.
func TestReplicationURLMultiHost(t *testing.T) {
	for _, in := range []string{
		"postgres://relay@db-a:5432,db-b:5433/app?target_session_attrs=read-write&sslmode=disable",
		"host=db-a,db-b port=5432,5433 dbname=app user=relay target_session_attrs=read-write sslmode=disable",
	} {
		got, err := replicationURL(in)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := pgconn.ParseConfig(got)
		if err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		hosts := []string{fmt.Sprintf("%s:%d", pc.Host, pc.Port)}
		for _, fb := range pc.Fallbacks {
			hosts = append(hosts, fmt.Sprintf("%s:%d", fb.Host, fb.Port))
		}
		if strings.Join(hosts, ",") != "db-a:5432,db-b:5433" || pc.ValidateConnect == nil || pc.RuntimeParams["replication"] != "database" {
			t.Errorf("%s: hosts %v, target_session_attrs kept %t, replication=%q", got, hosts, pc.ValidateConnect != nil, pc.RuntimeParams["replication"])
		}
	}
}

// The failover window's errors must be retried, not end the relay.
func TestFailoverWindowErrorsAreRetryable(t *testing.T) {
	for _, err := range []error{
		&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"},
		&pgconn.PgError{Code: "57P03", Message: "the database system is in recovery mode"},
		&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"},
		&pgconn.PgError{Code: "55000", Message: "logical decoding cannot be used while in recovery"},
		fmt.Errorf("%w at 10.0.0.2:5432", ErrStandby),
		pgconn.ErrReadOnlyConnection,
	} {
		if got := classify(fmt.Errorf("wrapped: %w", err), err); fault.IsFatal(got) {
			t.Errorf("%v is fatal", err)
		}
	}
}
