package logrepl

import (
	"strings"
	"testing"
)

func TestReplicationURLKeepsTLSAndAddsReplication(t *testing.T) {
	got, err := replicationURL("postgres://relay:pw@db:5432/app?sslmode=verify-full&sslrootcert=/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replication=database", "sslmode=verify-full", "sslrootcert=%2Fca.pem", "relay:pw@db:5432/app"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s lacks %s", got, want)
		}
	}
	kv, err := replicationURL("host=db dbname=app sslmode=require")
	if err != nil || kv != "host=db dbname=app sslmode=require replication=database" {
		t.Errorf("key=value form: %q, %v", kv, err)
	}
}

func TestPublicationNamesQuotesIdentifierThenLiteral(t *testing.T) {
	cases := map[string]string{
		"outbox_relay":                `publication_names '"outbox_relay"'`,
		"MixedCase":                   `publication_names '"MixedCase"'`,
		`Evil'Pub"; DROP TABLE x; --`: `publication_names '"Evil''Pub""; DROP TABLE x; --"'`,
		"with space, and comma":       `publication_names '"with space, and comma"'`,
	}
	for in, want := range cases {
		if got := publicationNames(in); got != want {
			t.Errorf("publicationNames(%q) = %s, want %s", in, got, want)
		}
	}
}
