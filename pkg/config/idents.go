package config

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/relay-dev/relay/internal/ident"
)

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// topicName is Kafka's legal topic name (Topic.validate in the Java client).
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// SplitTable splits "schema.table" (either part optionally double-quoted, as in
// SQL) into its unquoted parts; a bare name means schema public. Unquoted parts
// fold to lower case as Postgres does.
func SplitTable(s string) (schema, table string, err error) { return ident.Table(s) }

// SplitColumns splits a comma-separated list of column names (each
// optionally double-quoted) into unquoted names; "" gives none.
func SplitColumns(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var cols []string
	for _, part := range splitOutsideQuotes(s, ',') {
		id, err := ident.Split(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		if len(id) != 1 {
			return nil, fmt.Errorf("%q is not a column name", strings.TrimSpace(part))
		}
		cols = append(cols, id[0])
	}
	return cols, nil
}

// splitOutsideQuotes splits s at sep where sep is not inside double quotes.
func splitOutsideQuotes(s string, sep byte) []string {
	var parts []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}
