package decode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// envelope is the content of a logical message emitted for the table-free
// outbox (configs/outbox_emit.sql writes it). Field names match the outbox
// columns so one mental model covers both. The scalar fields stay raw so that a
// hand-written message with a numeric id or key is relayed rather than
// rejected: a rejected message stops the relay.
type envelope struct {
	ID            json.RawMessage            `json:"id"`
	AggregateType json.RawMessage            `json:"aggregatetype"`
	AggregateID   json.RawMessage            `json:"aggregateid"`
	Type          json.RawMessage            `json:"type"`
	Payload       json.RawMessage            `json:"payload"`
	Headers       map[string]json.RawMessage `json:"headers"`
}

// scalar renders a JSON value as header or key text: a string as its
// contents, null or absent as nothing, anything else as its JSON text.
func scalar(raw json.RawMessage) ([]byte, bool, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, false, nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		return []byte(s), true, nil
	}
	return slices.Clone(raw), true, nil
}

func (d *Decoder) message() (Result, error) {
	m := &d.p.Message
	r, ok := d.messages[string(m.Prefix)]
	if !ok {
		return Result{}, nil
	}
	if !m.Transactional() {
		// A non-transactional message is emitted even when the writing
		// transaction rolls back: relaying it would break the outbox's atomicity.
		d.log.Warn().Str("prefix", string(m.Prefix)).Msg("non-transactional logical message ignored: emit with pg_logical_emit_message(true, ...)")
		return Result{}, nil
	}
	at := func(format string, args ...any) error {
		return fmt.Errorf("logical message with prefix %q at LSN %s: %s",
			m.Prefix, m.LSN, fmt.Sprintf(format, args...))
	}
	var env envelope
	if err := json.Unmarshal(m.Content, &env); err != nil {
		return Result{}, at("content is not a JSON envelope {id, aggregatetype, aggregateid, type, payload, headers}: %v", err)
	}
	id, ok, err := scalar(env.ID)
	if err != nil || !ok || len(id) == 0 {
		return Result{}, at("envelope has no \"id\"")
	}
	route, hasRoute, err := scalar(env.AggregateType)
	if err != nil {
		return Result{}, at("\"aggregatetype\": %v", err)
	}
	if !hasRoute && r.needsValue() {
		return Result{}, at("envelope of event %s has no \"aggregatetype\", and the topic needs it", id)
	}
	ev := &Event{
		Table:     "message:" + string(m.Prefix),
		Topic:     r.topic(route),
		ID:        string(id),
		Timestamp: d.commitAt,
		Partition: -1,
		Headers:   make([]Header, 0, 2+len(env.Headers)),
	}
	ev.Headers = append(ev.Headers, Header{Key: "id", Value: id})
	if key, ok, err := scalar(env.AggregateID); err != nil {
		return Result{}, at("\"aggregateid\" of event %s: %v", id, err)
	} else if ok {
		ev.Key = key
	}
	if typ, ok, err := scalar(env.Type); err != nil {
		return Result{}, at("\"type\" of event %s: %v", id, err)
	} else if ok {
		ev.Headers = append(ev.Headers, Header{Key: "type", Value: typ})
	}
	names := make([]string, 0, len(env.Headers))
	for k := range env.Headers {
		names = append(names, k)
	}
	// Sorted: JSON objects (and jsonb) have no order, records should.
	slices.Sort(names)
	for _, k := range names {
		v, _, err := scalar(env.Headers[k])
		if err != nil {
			return Result{}, at("header %q of event %s: %v", k, id, err)
		}
		ev.Headers = append(ev.Headers, Header{Key: k, Value: v})
	}
	// A JSON string carries a payload that is not JSON (text, or anything a
	// service encoded itself): its contents are published, not its quoted
	// form. null or no payload is a null value, as a NULL payload column is.
	var ct []byte
	if p := bytes.TrimSpace(env.Payload); len(p) > 0 && p[0] == '"' {
		v, _, err := scalar(p)
		if err != nil {
			return Result{}, at("\"payload\" of event %s: %v", id, err)
		}
		ev.Value = append([]byte{}, v...) // "" is an empty value, not a null one
		ct = ctText
	} else if len(p) > 0 && string(p) != "null" {
		ev.Value = p
		ct = ctJSON
	}
	if f := d.msgFmt[string(m.Prefix)]; f != nil && f.cloudEvents {
		var typ []byte
		if len(ev.Headers) > 1 && ev.Headers[1].Key == "type" {
			typ = ev.Headers[1].Value
		}
		if err := addCloudEvents(ev, f, typ, ct, fmt.Sprintf("logical message with prefix %q", m.Prefix)); err != nil {
			return Result{}, err
		}
	}
	return Result{Kind: KindEvent, Event: ev}, nil
}
