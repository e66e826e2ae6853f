package config

import (
	"encoding/json"
	"fmt"
)

// Secret is a configuration value that must never be printed, such as
// kafka.sasl.password. Every way of rendering it (fmt verbs, JSON, text,
// YAML, and so zerolog's Interface and Stringer fields) yields "<redacted>",
// so a config logged whole or a struct in an error message cannot leak it;
// the one way to the value is Reveal, called where it is handed to a client
// library. An empty Secret renders as "", so "not set" stays visible.
type Secret string

const redactedSecret = "<redacted>"

// Reveal returns the secret itself, for the library that needs it.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) shown() string {
	if s == "" {
		return ""
	}
	return redactedSecret
}

// String implements fmt.Stringer.
func (s Secret) String() string { return s.shown() }

// GoString implements fmt.GoStringer, for %#v.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.shown()) }

// Format makes every fmt verb, %x and %d included, print the redacted form.
func (s Secret) Format(f fmt.State, verb rune) { formatRedacted(f, verb, s.shown()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.shown()) }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.shown()), nil }

// MarshalYAML implements yaml.Marshaler.
func (s Secret) MarshalYAML() (any, error) { return s.shown(), nil }

// ConnString is a Postgres connection string (postgres.url), a URL or a
// key=value DSN, that holds the login password. Unlike a Secret it is
// useful in logs, so every rendering shows it with its passwords replaced
// (see Redacted); Reveal returns it whole, for pgx.
type ConnString string

// Reveal returns the connection string with its passwords, for pgx.
func (c ConnString) Reveal() string { return string(c) }

// Redacted returns the connection string with every password replaced, in
// URL and DSN form alike.
func (c ConnString) Redacted() string { return RedactURL(string(c)) }

// RedactError renders err with every password of c removed, for errors from
// a driver that may quote the connection string.
func (c ConnString) RedactError(err error) string { return RedactError(err, string(c)) }

// String implements fmt.Stringer.
func (c ConnString) String() string { return c.Redacted() }

// GoString implements fmt.GoStringer, for %#v.
func (c ConnString) GoString() string { return fmt.Sprintf("%q", c.Redacted()) }

// Format makes every fmt verb print the redacted form.
func (c ConnString) Format(f fmt.State, verb rune) { formatRedacted(f, verb, c.Redacted()) }

// MarshalJSON implements json.Marshaler.
func (c ConnString) MarshalJSON() ([]byte, error) { return json.Marshal(c.Redacted()) }

// MarshalText implements encoding.TextMarshaler.
func (c ConnString) MarshalText() ([]byte, error) { return []byte(c.Redacted()), nil }

// MarshalYAML implements yaml.Marshaler.
func (c ConnString) MarshalYAML() (any, error) { return c.Redacted(), nil }

func formatRedacted(f fmt.State, verb rune, shown string) {
	switch {
	case verb == 'q', verb == 'v' && f.Flag('#'):
		fmt.Fprintf(f, "%q", shown)
	default:
		fmt.Fprint(f, shown)
	}
}
