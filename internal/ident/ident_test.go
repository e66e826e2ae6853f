package ident

import "testing"

func TestTable(t *testing.T) {
	for _, c := range []struct{ in, schema, table string }{
		{"outbox", "public", "outbox"},
		{"App.Outbox", "app", "outbox"},
		{`"Billing"."Out""box"`, "Billing", `Out"box`},
		{`"evil; drop table x"`, "public", "evil; drop table x"},
	} {
		s, tb, err := Table(c.in)
		if err != nil || s != c.schema || tb != c.table {
			t.Errorf("Table(%q) = %q, %q, %v; want %q, %q", c.in, s, tb, err, c.schema, c.table)
		}
	}
	for _, bad := range []string{"", "a.b.c", `"unterminated`, "evil; drop", "a..b", `"a"b`} {
		if _, _, err := Table(bad); err == nil {
			t.Errorf("Table(%q): want an error", bad)
		}
	}
}
