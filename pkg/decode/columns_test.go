package decode

import (
	"strings"
	"testing"
)

func TestColumnTypeOK(t *testing.T) {
	ok := map[Role][]string{
		RoleID:        {"uuid", "text", "character varying(36)", "character(36)", "name", "public.citext", "smallint", "integer", "bigint"},
		RoleKey:       {"text", "character varying", "bigint", "uuid"},
		RoleRouteBy:   {"text", "character varying(255)", "integer"},
		RoleType:      {"text", "character varying(255)", "smallint"},
		RolePayload:   {"jsonb", "json", "bytea", "text", "character varying(200)"},
		RoleTimestamp: {"timestamp with time zone", "timestamp(3) with time zone", "timestamp without time zone", "timestamp(6) without time zone", "bigint"},
		RolePartition: {"smallint", "integer", "bigint"},
		RoleHeader:    {"text", "jsonb", "numeric(10,2)", "integer[]"},
	}
	bad := map[Role][]string{
		RoleID:        {"jsonb", "numeric", "numeric(10,0)", "text[]", "uuid[]", "bytea", "\"char\"", "date"},
		RoleKey:       {"jsonb", "double precision", "bigint[]"},
		RoleRouteBy:   {"jsonb", "boolean"},
		RoleType:      {"json"},
		RolePayload:   {"integer", "character(10)", "jsonb[]", "xml", "public.citext"},
		RoleTimestamp: {"date", "text", "time with time zone", "timestamp with time zone[]"},
		RolePartition: {"text", "numeric", "integer[]"},
	}
	for role, types := range ok {
		for _, typ := range types {
			if err := ColumnTypeOK(role, typ); err != nil {
				t.Errorf("%s %q refused: %v", role, typ, err)
			}
		}
	}
	for role, types := range bad {
		for _, typ := range types {
			err := ColumnTypeOK(role, typ)
			if err == nil {
				t.Errorf("%s %q accepted", role, typ)
				continue
			}
			if !strings.Contains(err.Error(), typ) || !strings.Contains(err.Error(), string(role)+" needs ") {
				t.Errorf("%s %q: error %q does not name the type and what the role needs", role, typ, err)
			}
		}
	}
	if err := ColumnTypeOK("nosuch", "text"); err == nil {
		t.Error("unknown role accepted")
	}
}
