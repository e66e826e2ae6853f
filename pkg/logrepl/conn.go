package logrepl

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// replicationURL turns the user's libpq connection string (URL or key=value
// form) into one that opens a logical replication connection.
func replicationURL(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("postgres.url: not a valid URL")
		}
		q := u.Query()
		q.Set("replication", "database")
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return s + " replication=database", nil
}

// publicationNames renders pgoutput's publication_names option. pgoutput
// reads the value as a list of SQL identifiers (SplitIdentifierString), so an
// unquoted name is folded to lower case and one holding a quote, comma or
// space is a syntax error: the name is quoted as an identifier first, then
// as a literal, so that no publication name can inject into the command.
func publicationNames(name string) string {
	return "publication_names '" + escapeLiteral(pgx.Identifier{name}.Sanitize()) + "'"
}

// escapeLiteral doubles single quotes for use inside a '...' option value of
// the replication protocol, which takes no bind parameters.
func escapeLiteral(s string) string { return strings.ReplaceAll(s, "'", "''") }
