package config

import (
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// defaultEventSources fills the ce_source of entries with cloudevents on and
// no cloudevents_source: /relay/<database>/<table>, or
// /relay/<database>/message/<prefix>, so that two relays on different
// databases do not produce the same source and id.
func (c *Config) defaultEventSources() {
	db := "postgres"
	if pc, err := pgx.ParseConfig(c.Postgres.URL.Reveal()); err == nil {
		switch {
		case pc.Database != "":
			db = pc.Database
		case pc.User != "":
			db = pc.User // libpq's default database
		}
	}
	db = url.PathEscape(db)
	for i, t := range c.Outbox {
		if t.CloudEvents && t.CloudEventsSource == "" {
			c.Outbox[i].CloudEventsSource = "/relay/" + db + "/" + url.PathEscape(strings.ReplaceAll(t.Table, `"`, ""))
		}
	}
	for i, m := range c.Messages {
		if m.CloudEvents && m.CloudEventsSource == "" {
			c.Messages[i].CloudEventsSource = "/relay/" + db + "/message/" + url.PathEscape(m.Prefix)
		}
	}
}

// validateSource checks cloudevents_source: only with cloudevents on, and a
// URI-reference (RFC 3986), absolute or relative, as ce_source must be.
func validateSource(p *problems, on bool, src string) {
	switch {
	case src == "":
	case !on:
		p.add("cloudevents_source", "set while cloudevents is false")
	default:
		if _, err := url.Parse(src); err != nil || strings.ContainsAny(src, " \t\r\n") {
			p.add("cloudevents_source", "%q is not a URI reference", src)
		}
	}
}

func (t *Table) validateEventFormat(p *problems) {
	validateSource(p, t.CloudEvents, t.CloudEventsSource)
	if t.TraceColumn == "" {
		return
	}
	for _, col := range []string{t.Columns.ID, t.Columns.Key, t.Columns.Payload, t.Columns.RouteBy, t.Columns.Type} {
		if t.TraceColumn == col {
			p.add("trace_column", "%q is already mapped by columns", col)
		}
	}
}
