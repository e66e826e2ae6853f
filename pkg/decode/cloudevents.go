package decode

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// CloudEvents 1.0, Kafka protocol binding, binary content mode: the
// attributes travel as ce_-prefixed headers and the value is the event data
// unchanged, so consumers that know nothing of CloudEvents see the same
// records as before.
var (
	ceSpecVersion = []byte("1.0")
	ctJSON        = []byte("application/json")
	ctText        = []byte("text/plain; charset=utf-8")
)

const (
	jsonOID    = 114
	jsonbOID   = 3802
	textOID    = 25
	varcharOID = 1043
)

// eventFormat is what a table or message prefix adds to its records beyond
// the Debezium mapping: CloudEvents attributes and trace context.
type eventFormat struct {
	cloudEvents bool
	source      []byte // ce_source, shared by every event of the table
}

// contentType names the payload column's media type for the content-type
// header, nil when the relay cannot tell (bytea).
func contentType(typeOID uint32) []byte {
	switch typeOID {
	case jsonOID, jsonbOID:
		return ctJSON
	case textOID, varcharOID:
		return ctText
	}
	return nil
}

// addCloudEvents appends the CloudEvents attributes of ev. typ is the type
// header's value (ce_type is required, so a NULL type is an error naming
// what), ct the content type or nil.
func addCloudEvents(ev *Event, f *eventFormat, typ, ct []byte, what string) error {
	if len(typ) == 0 {
		return fmt.Errorf("%s: event %s has no type, and CloudEvents requires ce_type (cloudevents: true)", what, ev.ID)
	}
	ts := ev.Timestamp.UTC().AppendFormat(make([]byte, 0, len(time.RFC3339Nano)), time.RFC3339Nano)
	ev.Headers = append(ev.Headers,
		Header{Key: "ce_specversion", Value: ceSpecVersion},
		Header{Key: "ce_id", Value: ev.Headers[0].Value}, // the id header
		Header{Key: "ce_source", Value: f.source},
		Header{Key: "ce_type", Value: typ},
		Header{Key: "ce_time", Value: ts},
	)
	if ev.Key != nil {
		ev.Headers = append(ev.Headers, Header{Key: "ce_subject", Value: ev.Key})
	}
	if ct != nil && ev.Value != nil {
		ev.Headers = append(ev.Headers, Header{Key: "content-type", Value: ct})
	}
	return nil
}

// parseTrace reads the trace context column: a bare W3C traceparent, or
// the Java properties text Debezium's ActivateTracingSpan stores in
// tracingspancontext (traceparent=..., tracestate=..., # comments, \
// escapes). It returns nil parent when there is no valid traceparent:
// trace context is best effort and never stops the relay.
func parseTrace(b []byte) (parent, state []byte) {
	b = bytes.TrimSpace(b)
	if validTraceparent(b) {
		return bytes.Clone(b), nil
	}
	for len(b) > 0 {
		var line []byte
		line, b = nextLogicalLine(b)
		key, val, ok := splitProperty(line)
		if !ok {
			continue
		}
		switch key {
		case "traceparent":
			parent = val
		case "tracestate":
			state = val
		}
	}
	if !validTraceparent(parent) {
		return nil, nil
	}
	if len(state) > 512 || !utf8.Valid(state) {
		// W3C bounds tracestate at 512 characters; a bad one is dropped,
		// the traceparent alone still joins the trace.
		state = nil
	}
	return parent, state
}

// nextLogicalLine returns the next line, joining lines that end in an odd
// number of backslashes (Java properties continuation).
func nextLogicalLine(b []byte) (line, rest []byte) {
	for {
		i := bytes.IndexAny(b, "\r\n")
		var l []byte
		if i < 0 {
			l, b = b, nil
		} else {
			sep := b[i]
			l, b = b[:i], b[i+1:]
			if sep == '\r' && len(b) > 0 && b[0] == '\n' {
				b = b[1:]
			}
		}
		n := 0
		for n < len(l) && l[len(l)-1-n] == '\\' {
			n++
		}
		if n%2 == 1 && len(b) > 0 {
			line = append(line, l[:len(l)-1]...)
			b = bytes.TrimLeft(b, " \t\f")
			continue
		}
		return append(line, l...), b
	}
}

// splitProperty splits one properties line into an unescaped key and value.
func splitProperty(line []byte) (string, []byte, bool) {
	line = bytes.TrimLeft(line, " \t\f")
	if len(line) == 0 || line[0] == '#' || line[0] == '!' {
		return "", nil, false
	}
	end := len(line)
	for i := 0; i < len(line); i++ {
		if line[i] == '\\' {
			i++
			continue
		}
		if line[i] == '=' || line[i] == ':' || line[i] == ' ' || line[i] == '\t' || line[i] == '\f' {
			end = i
			break
		}
	}
	key := unescapeProperty(line[:end])
	rest := bytes.TrimLeft(line[end:], " \t\f")
	if len(rest) > 0 && (rest[0] == '=' || rest[0] == ':') {
		rest = bytes.TrimLeft(rest[1:], " \t\f")
	}
	return string(key), unescapeProperty(rest), true
}

func unescapeProperty(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 == len(b) {
			out = append(out, c)
			continue
		}
		i++
		switch b[i] {
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 'f':
			out = append(out, '\f')
		case 'u':
			if i+4 < len(b) {
				// 16 bits: a \uXXXX escape always fits a rune.
				if r, err := strconv.ParseInt(string(b[i+1:i+5]), 16, 32); err == nil {
					out = utf8.AppendRune(out, rune(r))
					i += 4
					continue
				}
			}
			out = append(out, 'u')
		default:
			out = append(out, b[i])
		}
	}
	return out
}

// validTraceparent checks the W3C Trace Context traceparent form
// version-traceid-parentid-flags in lower-case hex, with the all-zero ids
// and version ff that the spec calls invalid. Future versions may append
// fields after a dash, which are kept.
func validTraceparent(b []byte) bool {
	if len(b) < 55 || (len(b) > 55 && b[55] != '-') {
		return false
	}
	hex := func(s []byte) bool {
		for _, c := range s {
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
		return true
	}
	zero := func(s []byte) bool { return bytes.Count(s, []byte{'0'}) == len(s) }
	version, traceID, parentID, flags := b[0:2], b[3:35], b[36:52], b[53:55]
	if b[2] != '-' || b[35] != '-' || b[52] != '-' || !hex(version) || !hex(traceID) || !hex(parentID) || !hex(flags) {
		return false
	}
	if string(version) == "ff" || (string(version) == "00" && len(b) != 55) {
		return false
	}
	return !zero(traceID) && !zero(parentID)
}
