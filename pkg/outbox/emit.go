package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// DefaultPrefix is the logical message prefix of configs/outbox_emit.sql and
// of the relay's messages[].prefix examples.
const DefaultPrefix = "outbox"

// envelope is the content the relay decodes from a logical message (the one
// configs/outbox_emit.sql builds).
type envelope struct {
	ID            string                     `json:"id"`
	AggregateType string                     `json:"aggregatetype"`
	AggregateID   string                     `json:"aggregateid"`
	Type          string                     `json:"type"`
	Payload       json.RawMessage            `json:"payload"`
	Headers       map[string]json.RawMessage `json:"headers"`
}

// Emit writes ev into the WAL as a transactional logical decoding message
// with prefix ("" for DefaultPrefix): the table-free outbox. Like an outbox
// row it is decoded only if tx commits, in commit order; nothing is stored,
// so there is no table to prune. The relay relays it when its messages list
// the prefix. Trace context goes into the traceparent and tracestate
// headers, Extra into further headers (strings as they are, other values as
// their JSON text). A Payload that is not JSON is sent as a JSON string,
// which the relay publishes as its contents.
func Emit(ctx context.Context, tx Execer, prefix string, ev Event) (uuid.UUID, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if ev.AggregateType == "" {
		// The relay stops on an envelope it cannot route; refuse it here,
		// where the caller's transaction can still handle the error.
		return uuid.Nil, fmt.Errorf("outbox: event of type %q has no AggregateType", ev.Type)
	}
	id, err := eventID(ev.ID)
	if err != nil {
		return uuid.Nil, err
	}
	content, err := encodeEnvelope(id, ev)
	if err != nil {
		return uuid.Nil, err
	}
	// true: transactional. A non-transactional message survives a rollback,
	// and the relay ignores those.
	if err := tx.Exec(ctx, "SELECT pg_catalog.pg_logical_emit_message(true, $1::text, $2::text)", prefix, string(content)); err != nil {
		return uuid.Nil, fmt.Errorf("outbox: emitting event %s (%s) with prefix %q: %w", id, ev.Type, prefix, err)
	}
	return id, nil
}

func encodeEnvelope(id uuid.UUID, ev Event) ([]byte, error) {
	env := envelope{
		ID: id.String(), AggregateType: ev.AggregateType, AggregateID: ev.AggregateID, Type: ev.Type,
		Headers: map[string]json.RawMessage{},
	}
	switch {
	case ev.Payload == nil:
		env.Payload = json.RawMessage("null")
	case json.Valid(ev.Payload):
		env.Payload = ev.Payload
	default:
		s, _ := json.Marshal(string(ev.Payload))
		env.Payload = s
	}
	names := make([]string, 0, len(ev.Extra))
	for k := range ev.Extra {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v, err := json.Marshal(ev.Extra[k])
		if err != nil {
			return nil, fmt.Errorf("outbox: event %s: header %q: %w", id, k, err)
		}
		env.Headers[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			s, _ := json.Marshal(v)
			env.Headers[k] = s
		}
	}
	set("traceparent", ev.TraceParent)
	set("tracestate", ev.TraceState)
	return json.Marshal(env)
}
