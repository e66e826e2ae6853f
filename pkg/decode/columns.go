package decode

import (
	"fmt"
	"slices"
	"strings"
)

// Role is what a mapped outbox column becomes in the Kafka record.
type Role string

// The roles of the outbox mapping, named as in the configuration.
const (
	RoleID        Role = "id"
	RoleKey       Role = "key"
	RolePayload   Role = "payload"
	RoleRouteBy   Role = "route_by"
	RoleType      Role = "type"
	RoleTimestamp Role = "timestamp"
	RoleHeader    Role = "header"
	RolePartition Role = "partition"
)

// The decoder takes every column in pgoutput's text form, so a type serves a
// role when its text form is what the role needs: the value as written for
// ids, keys, topics and types; JSON, text or raw bytes for the payload (bytea
// is recognised by its type and unhexed, anything else is published as its
// text); a timestamp parseTimestamp reads, or epoch milliseconds; a decimal
// partition number. Types outside these lists would still decode, but into
// bytes no consumer of an outbox expects (a numeric key "1.0", a payload of
// "(1,2)", a date that is no timestamp), so they are refused up front rather
// than published.
var (
	textTypes    = []string{"text", "character varying", "character", "name", "citext"}
	intTypes     = []string{"smallint", "integer", "bigint"}
	identTypes   = slices.Concat(textTypes, []string{"uuid"}, intTypes)
	payloadTypes = []string{"jsonb", "json", "bytea", "text", "character varying"}
	timeTypes    = slices.Concat([]string{"timestamp with time zone", "timestamp without time zone"}, intTypes)
)

// ColumnTypeOK reports whether a column of Postgres type typ, as format_type
// prints it ("character varying(255)", "bigint", "public.citext"), can serve
// role. The error says what the role accepts. Both `relay check` and the
// start-up checks use it, so they accept exactly what the decoder relays.
func ColumnTypeOK(role Role, typ string) error {
	var allowed []string
	var want string
	switch role {
	case RoleID, RoleKey, RoleRouteBy, RoleType:
		allowed, want = identTypes, "text, varchar, char, name, citext, uuid, smallint, integer or bigint"
	case RolePayload:
		allowed, want = payloadTypes, "jsonb, json, bytea, text or varchar"
	case RoleTimestamp:
		allowed, want = timeTypes, "timestamptz, timestamp, or an integer type holding epoch milliseconds"
	case RolePartition:
		allowed, want = intTypes, "smallint, integer or bigint"
	case RoleHeader:
		// A header carries the column's text form, whatever its type.
		return nil
	default:
		return fmt.Errorf("unknown column role %q", role)
	}
	if slices.Contains(allowed, baseType(typ)) {
		return nil
	}
	return fmt.Errorf("is %s, %s needs %s", typ, role, want)
}

// baseType strips what format_type adds to a type's name: a length or
// precision, wherever it sits ("character varying(255)", "timestamp(3) with
// time zone"), and a schema ("public.citext"). Arrays keep their "[]" and so
// match nothing.
func baseType(typ string) string {
	var b strings.Builder
	depth := 0
	for _, r := range typ {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	base := strings.Join(strings.Fields(b.String()), " ")
	if !strings.Contains(base, "\"") {
		if i := strings.LastIndexByte(base, '.'); i >= 0 {
			base = base[i+1:]
		}
	}
	return base
}
