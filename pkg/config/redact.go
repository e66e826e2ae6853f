package config

import (
	"net/url"
	"sort"
	"strings"
)

// redacted replaces a password wherever a connection string is printed.
const redacted = "xxxxx"

// passwordKeys are the connection parameters that hold a secret: the login
// password and the passphrase of the client's TLS key.
var passwordKeys = []string{"password", "sslpassword"}

// isURL reports whether conn is in URL form, by the rule pgx.ParseConfig
// uses; anything else is a key=value DSN.
func isURL(conn string) bool {
	return strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://")
}

// RedactURL hides the passwords in a Postgres connection string, in URL form
// (postgres://user:pw@host/db?sslpassword=...) or as a key=value DSN
// (host=db user=relay password='s e c'), so it can be logged.
func RedactURL(s string) string {
	if !isURL(s) {
		return redactDSN(s)
	}
	u, err := url.Parse(s)
	if err != nil {
		// An unparsable URL is still printed in errors; hide what would be
		// the password rather than echo it.
		return redactRawUserinfo(s)
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
	}
	q := u.Query()
	changed := false
	for _, k := range passwordKeys {
		if q.Has(k) {
			q.Set(k, redacted)
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// RedactError renders err with every password from the connection string
// conn removed, in any of the forms a driver might quote it.
func RedactError(err error, conn string) string {
	msg := err.Error()
	for _, pw := range passwords(conn) {
		for _, form := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw)} {
			msg = strings.ReplaceAll(msg, form, redacted)
		}
	}
	return msg
}

// passwords returns the secrets held in conn, longest first so that one
// password containing another is replaced whole.
func passwords(conn string) []string {
	var out []string
	add := func(pw string) {
		if pw != "" && pw != redacted {
			out = append(out, pw)
		}
	}
	if isURL(conn) {
		if u, err := url.Parse(conn); err == nil {
			if u.User != nil {
				pw, _ := u.User.Password()
				add(pw)
			}
			for _, k := range passwordKeys {
				add(u.Query().Get(k))
			}
		} else if _, pw, ok := rawUserinfo(conn); ok {
			add(pw)
		}
	} else {
		for _, f := range dsnFields(conn) {
			if isPasswordKey(f.key) {
				add(f.value)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func isPasswordKey(k string) bool {
	for _, p := range passwordKeys {
		if k == p {
			return true
		}
	}
	return false
}

// rawUserinfo finds the password of a URL that net/url rejects, as the text
// between the first ':' after the scheme and the last '@' of the authority.
// start is the password's offset in s.
func rawUserinfo(s string) (start int, pw string, ok bool) {
	i := strings.Index(s, "://")
	if i < 0 {
		return 0, "", false
	}
	rest := s[i+3:]
	// The authority ends at the first '/', '?' or '#' after the last '@';
	// a password may itself contain '/' or '?', so look for '@' first.
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return 0, "", false
	}
	colon := strings.Index(rest[:at], ":")
	if colon < 0 {
		return 0, "", false
	}
	return i + 3 + colon + 1, rest[colon+1 : at], true
}

func redactRawUserinfo(s string) string {
	start, pw, ok := rawUserinfo(s)
	if !ok {
		return s
	}
	return s[:start] + redacted + s[start+len(pw):]
}

// dsnField is one key=value pair of a DSN; start and end delimit the value as
// written (with its quotes), so that it can be replaced in place.
type dsnField struct {
	key, value string
	start, end int
}

// dsnFields splits a libpq key=value connection string: pairs separated by
// whitespace, optional spaces around '=', values either bare or in single
// quotes, with backslash escaping a quote or a backslash in both. It is
// lenient: what it cannot parse it skips, because it only serves redaction
// (pgx reports syntax errors).
func dsnFields(s string) []dsnField {
	var out []dsnField
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
	i := 0
	for i < len(s) {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		ks := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[ks:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			// Not a key=value pair; skip the word.
			if i == ks {
				i++
			}
			continue
		}
		i++ // '='
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		vs := i
		var b strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			for i < len(s) && s[i] != '\'' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
			if i < len(s) {
				i++ // closing quote
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
		}
		out = append(out, dsnField{key: key, value: b.String(), start: vs, end: i})
	}
	return out
}

// redactDSN replaces the value of every password key in a DSN.
func redactDSN(s string) string {
	fields := dsnFields(s)
	var b strings.Builder
	last := 0
	for _, f := range fields {
		if !isPasswordKey(f.key) || f.value == "" || f.value == redacted {
			continue
		}
		b.WriteString(s[last:f.start])
		b.WriteString(redacted)
		last = f.end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}
