package config

import (
	"fmt"
	"regexp"
	"strings"
)

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// topicName is Kafka's legal topic name (Topic.validate in the Java client).
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func checkIdent(s string) error {
	if s == "" {
		return fmt.Errorf("required")
	}
	if len(s) > 63 {
		return fmt.Errorf("%q is longer than 63 bytes", s)
	}
	if strings.ContainsRune(s, 0) {
		return fmt.Errorf("contains a NUL byte")
	}
	return nil
}

// SplitTable splits "schema.table" (either part optionally double-quoted, as in
// SQL) into its unquoted parts; a bare name means schema public. Unquoted parts
// fold to lower case as Postgres does.
func SplitTable(s string) (schema, table string, err error) {
	parts, err := splitIdents(s)
	if err != nil {
		return "", "", err
	}
	switch len(parts) {
	case 1:
		return "public", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("%q must be table or schema.table", s)
}

// SplitColumns splits a comma-separated list of column names (each
// optionally double-quoted) into unquoted names; "" gives none.
func SplitColumns(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var cols []string
	for _, part := range splitOutsideQuotes(s, ',') {
		id, err := splitIdents(strings.TrimSpace(part))
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

func splitIdents(s string) ([]string, error) {
	var parts []string
	for i := 0; ; {
		var part string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return nil, fmt.Errorf("%q has an unterminated quoted identifier", s)
				}
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			part, i = b.String(), j+1
		} else {
			j := i
			for j < len(s) && s[j] != '.' {
				j++
			}
			part = strings.ToLower(strings.TrimSpace(s[i:j]))
			if strings.ContainsAny(part, "\" ;") {
				return nil, fmt.Errorf("%q: unquoted identifier %q has characters that need double quotes", s, part)
			}
			i = j
		}
		if err := checkIdent(part); err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		parts = append(parts, part)
		if i >= len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("%q: expected '.' after quoted identifier", s)
		}
		i++
	}
}
