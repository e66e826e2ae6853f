package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validBase() Config {
	c := Default()
	c.Postgres.URL = "postgres://relay@db/app"
	c.Kafka.Brokers = []string{"k:9092"}
	c.Outbox = []Table{DefaultTable(DefaultOutboxTable)}
	return c
}

// problemsOf returns the problems Validate reports for c, failing the test
// when it reports none.
func problemsOf(t *testing.T, c *Config) string {
	t.Helper()
	err := c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate = %v, want a ValidationError", err)
	}
	return strings.Join(ve.Problems, "\n")
}

// Each section reports every one of its problems, naming the key, and
// Config.Validate collects them all, prefixing list entries with their index.
func TestValidateEverySectionNamesItsKeys(t *testing.T) {
	c := validBase()
	c.Kafka.Version = "0.10.2.0"
	c.Kafka.SASL = SASL{Mechanism: SASLScramSHA512}
	c.Kafka.Linger = 2 * time.Second
	c.HTTP.Listen = "9090"
	c.Log.Format = "xml"
	c.Outbox = append(c.Outbox, DefaultTable("public.b"))
	c.Outbox[1].RouteRegex = "(?<other>.*)"
	c.Outbox[1].OnMissingColumn = "skip"
	c.Messages = []Message{{Topic: "t"}}
	got := problemsOf(t, &c)
	for _, want := range []string{
		"kafka.version: 0.10.2.0 is too old: headers and idempotence need 0.11 or later",
		"kafka.sasl.username: required with kafka.sasl.mechanism SCRAM-SHA-512",
		"kafka.sasl.password: required with kafka.sasl.mechanism SCRAM-SHA-512",
		"kafka.linger: must be between 0 and 1s, not 2s",
		`http.listen: "9090" must be host:port or :port`,
		`log.format: "xml" must be json or console`,
		"outbox[1].route_regex: needs a named group (?<routedByValue>...) or (?P<routedByValue>...)",
		`outbox[1].on_missing_column: "skip" must be error or ignore`,
		"messages[0].prefix: required",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no problem %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "outbox[0]") {
		t.Errorf("outbox[0] is valid but reported:\n%s", got)
	}

	c = validBase()
	c.Kafka.Version = "banana"
	if got := problemsOf(t, &c); !strings.HasPrefix(got, "kafka.version: ") {
		t.Errorf("unparsable kafka.version: %s", got)
	}
	if _, err := c.Kafka.SaramaVersion(); err == nil || !strings.HasPrefix(err.Error(), "kafka.version: ") {
		t.Errorf("SaramaVersion = %v", err)
	}
}

// route_regex is compiled once, by Validate, anchored as RegexRouter
// matches; decode uses the compiled one.
func TestRouteRegexCompiledAtLoad(t *testing.T) {
	p := writeConfig(t, `
postgres: {url: postgres://relay@db/app}
kafka: {brokers: ["k:9092"]}
outbox:
  - table: public.outbox
    route_regex: 'acme\.(?<routedByValue>[a-z]+)'
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	re := cfg.Outbox[0].RouteRegexp()
	if re == nil {
		t.Fatal("route_regex not compiled at load")
	}
	if !re.MatchString("acme.orders") || re.MatchString("x.acme.orders") || re.MatchString("acme.orders.v2") {
		t.Errorf("%s is not anchored at both ends", re)
	}
	if DefaultTable("x").RouteRegexp() != nil {
		t.Error("a table without route_regex has a regexp")
	}
	// An expression balanced only by the anchoring group is still rejected.
	tb := DefaultTable("public.outbox")
	tb.RouteRegex = "a)|(?<routedByValue>b"
	if err := tb.Validate(); err == nil || !strings.Contains(err.Error(), "route_regex") || tb.RouteRegexp() != nil {
		t.Errorf("Validate(%q) = %v, regexp %v", tb.RouteRegex, err, tb.RouteRegexp())
	}
}

// A TLS file that cannot be used is a config problem at load, naming the
// key, not a failure when the producer is first built.
func TestTLSFilesCheckedAtLoad(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		tls  TLS
		want string
	}{
		{"missing-ca", TLS{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")}, "kafka.tls.ca_file: open "},
		{"ca-not-pem", TLS{Enabled: true, CAFile: notPEM}, "kafka.tls.ca_file: " + notPEM + " holds no PEM certificate"},
		{"bad-pair", TLS{Enabled: true, CertFile: notPEM, KeyFile: notPEM}, "kafka.tls.cert_file/key_file: "},
		{"half-pair", TLS{Enabled: true, CertFile: notPEM}, "kafka.tls: cert_file and key_file must be set together"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validBase()
			cfg.Kafka.TLS = c.tls
			if got := problemsOf(t, &cfg); !strings.Contains(got, c.want) {
				t.Errorf("no problem %q in:\n%s", c.want, got)
			}
		})
	}
	ok := validBase()
	ok.Kafka.TLS = TLS{Enabled: true, ServerName: "kafka"}
	if err := ok.Validate(); err != nil {
		t.Errorf("TLS with the system CAs: %v", err)
	}
}
