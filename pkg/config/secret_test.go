package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// Every way a value is commonly printed must hide the secret, the whole
// config included.
func TestSecretCannotBePrinted(t *testing.T) {
	const pw = "s3cret-pw"
	cfg := Default()
	cfg.Kafka.SASL.Password = pw
	cfg.Postgres.URL = "postgres://relay:" + pw + "@db/app"
	dsn := ConnString("host=db user=relay password='" + pw + "' dbname=app")

	var outs []string
	for _, v := range []any{cfg.Kafka.SASL.Password, cfg.Postgres.URL, dsn, cfg, &cfg, cfg.Kafka.SASL, cfg.Postgres} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(j))
		var buf bytes.Buffer
		l := zerolog.New(&buf)
		l.Info().Interface("v", v).Msg("")
		outs = append(outs, buf.String())
	}
	var buf bytes.Buffer
	l := zerolog.New(&buf)
	l.Info().Stringer("pw", cfg.Kafka.SASL.Password).Stringer("url", cfg.Postgres.URL).Msg("")
	outs = append(outs, buf.String())
	text, _ := cfg.Kafka.SASL.Password.MarshalText()
	y, _ := dsn.MarshalYAML()
	outs = append(outs, string(text), fmt.Sprint(y))
	for _, o := range outs {
		if strings.Contains(o, pw) || strings.Contains(o, fmt.Sprintf("%x", pw)) {
			t.Errorf("secret printed: %s", o)
		}
	}
	if got := fmt.Sprint(cfg.Kafka.SASL.Password); got != "<redacted>" {
		t.Errorf("Secret prints as %q", got)
	}
	if got := fmt.Sprint(cfg.Postgres.URL); got != "postgres://relay:xxxxx@db/app" {
		t.Errorf("ConnString prints as %q", got)
	}
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("empty Secret prints as %q, want empty (not set)", got)
	}
	if cfg.Kafka.SASL.Password.Reveal() != pw || dsn.Reveal() != string(dsn) {
		t.Error("Reveal does not return the value")
	}
}
