package config

import (
	"strings"
	"testing"
)

func TestCloudEventsAndTraceKeys(t *testing.T) {
	cfg, err := Load(writeConfig(t, `
postgres:
  url: postgres://relay@db:5432/app
kafka:
  brokers: ["k:9092"]
outbox:
  - table: public.outbox
    cloudevents: true
    trace_column: tracingspancontext
  - table: '"Billing"."Outbox"'
    cloudevents: true
    cloudevents_source: https://billing.example.com/outbox
  - table: public.plain
messages:
  - prefix: outbox
    cloudevents: true
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"/relay/app/public.outbox", "https://billing.example.com/outbox", ""} {
		if got := cfg.Outbox[i].CloudEventsSource; got != want {
			t.Errorf("outbox[%d] ce_source %q, want %q", i, got, want)
		}
	}
	if got := cfg.Messages[0].CloudEventsSource; got != "/relay/app/message/outbox" {
		t.Errorf("message ce_source %q", got)
	}
	if cfg.Outbox[0].TraceColumn != "tracingspancontext" || !cfg.Outbox[0].CloudEvents || cfg.Outbox[2].CloudEvents {
		t.Errorf("outbox %+v", cfg.Outbox)
	}

	_, err = Load(writeConfig(t, `
postgres:
  url: postgres://relay@db:5432/app
kafka:
  brokers: ["k:9092"]
outbox:
  - table: public.outbox
    cloudevents_source: /x
    trace_column: payload
  - table: public.other
    cloudevents: true
    cloudevents_source: "has space"
`))
	if err == nil {
		t.Fatal("invalid cloudevents/trace keys accepted")
	}
	for _, want := range []string{"outbox[0].cloudevents_source: set while cloudevents is false",
		`outbox[0].trace_column: "payload" is already mapped`, `outbox[1].cloudevents_source: "has space" is not a URI reference`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
