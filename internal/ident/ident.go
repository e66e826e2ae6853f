// Package ident parses the SQL identifiers users write in configuration and
// options (schema.table, column names), so that the relay and the libraries
// services import (pkg/outbox, pkg/inbox) read a name the same way: a table
// the relay is configured with is the table the writer inserts into.
package ident

import (
	"fmt"
	"strings"
)

// Table splits "schema.table" (either part optionally double-quoted, as in
// SQL) into its unquoted parts; a bare name means schema public. Unquoted
// parts fold to lower case as Postgres does.
func Table(s string) (schema, table string, err error) {
	parts, err := Split(s)
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

// Split splits a dotted name into its unquoted parts: a quoted part keeps
// its case and "" stands for one quote; an unquoted part folds to lower case
// and may not hold a quote, space or semicolon. Each part is a valid
// Postgres identifier (1 to 63 bytes, no NUL).
func Split(s string) ([]string, error) {
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
		if err := Check(part); err != nil {
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

// Check reports whether s can be a Postgres identifier: not empty, at most
// 63 bytes (longer ones are silently truncated by Postgres, so two names
// could meet), no NUL byte.
func Check(s string) error {
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
