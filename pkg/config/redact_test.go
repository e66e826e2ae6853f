package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://relay:s3cret@db:5432/app", "postgres://relay:xxxxx@db:5432/app"},
		{"postgresql://relay:s3cret@db/app?sslmode=require", "postgresql://relay:xxxxx@db/app?sslmode=require"},
		{"postgres://relay@db/app?password=s3cret&sslmode=disable", "postgres://relay@db/app?password=xxxxx&sslmode=disable"},
		{"postgres://relay@db/app?sslpassword=s3cret", "postgres://relay@db/app?sslpassword=xxxxx"},
		{"postgres://relay@db/app", "postgres://relay@db/app"},
		// Several hosts, as a failover setup lists them.
		{"postgres://relay:s3cret@h1:5432,h2:5433/app?target_session_attrs=read-write", "postgres://relay:xxxxx@h1:5432,h2:5433/app?target_session_attrs=read-write"},
		{"host=h1,h2 port=5432,5433 user=relay password=s3cret", "host=h1,h2 port=5432,5433 user=relay password=xxxxx"},
		// net/url rejects this host, but the password must still be hidden.
		{"postgres://relay:s3cret@d b/app", "postgres://relay:xxxxx@d b/app"},
		{"host=db user=relay password=s3cret dbname=app", "host=db user=relay password=xxxxx dbname=app"},
		{"host=db password = s3cret dbname=app", "host=db password = xxxxx dbname=app"},
		{"host=db user=relay password='s e c' dbname=app", "host=db user=relay password=xxxxx dbname=app"},
		{`host=db password='it\'s' dbname=app`, "host=db password=xxxxx dbname=app"},
		{`password=s3cret`, "password=xxxxx"},
		{"host=db sslpassword=s3cret sslmode=verify-full", "host=db sslpassword=xxxxx sslmode=verify-full"},
		{"host=db user=relay dbname=app", "host=db user=relay dbname=app"},
		{"host=db user=password dbname=app", "host=db user=password dbname=app"},
	}
	for _, c := range cases {
		if got := RedactURL(c.in); got != c.want {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRedactError(t *testing.T) {
	cases := []struct{ conn, secret string }{
		{"postgres://relay:s3cret@db/app", "s3cret"},
		{"postgres://relay:p%40ss%2Fw@db/app", "p@ss/w"},
		{"postgres://relay@db/app?password=s3cret", "s3cret"},
		{"host=db user=relay password=s3cret dbname=app", "s3cret"},
		{"host=db user=relay password='s e c' dbname=app", "s e c"},
		{"postgres://relay:s3cret@d b/app", "s3cret"},
	}
	for _, c := range cases {
		err := errors.New("cannot connect to " + c.conn + " with " + c.secret)
		got := RedactError(err, c.conn)
		if strings.Contains(got, c.secret) {
			t.Errorf("RedactError(%q) = %q: password left in", c.conn, got)
		}
		if !strings.Contains(got, "xxxxx") {
			t.Errorf("RedactError(%q) = %q: no redaction marker", c.conn, got)
		}
	}
}

// The DSN forms above are ones pgx accepts, so they do reach the logs.
func TestRedactDSNAsPgxParsesIt(t *testing.T) {
	for _, dsn := range []string{
		"host=db user=relay password=s3cret dbname=app",
		"host=db user=relay password='s e c' dbname=app",
		`host=db user=relay password='it\'s' dbname=app`,
	} {
		pc, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatalf("pgx rejects %q: %v", dsn, err)
		}
		if r := RedactURL(dsn); strings.Contains(r, pc.Password) {
			t.Errorf("RedactURL(%q) = %q keeps the password %q", dsn, r, pc.Password)
		}
		if got := passwords(dsn); len(got) != 1 || got[0] != pc.Password {
			t.Errorf("passwords(%q) = %q, pgx reads %q", dsn, got, pc.Password)
		}
	}
}
