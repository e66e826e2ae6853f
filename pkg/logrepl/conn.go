package logrepl

import (
	"fmt"
	"net/url"
	"strings"
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

// escapeLiteral doubles single quotes for use inside a '...' option value of
// the replication protocol, which takes no bind parameters.
func escapeLiteral(s string) string { return strings.ReplaceAll(s, "'", "''") }
