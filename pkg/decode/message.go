package decode

import (
	"encoding/json"
	"fmt"
)

// envelope is the content of a logical message emitted for the table-free
// outbox. Field names match the outbox columns so one mental model covers both.
type envelope struct {
	ID            string            `json:"id"`
	AggregateType string            `json:"aggregatetype"`
	AggregateID   *string           `json:"aggregateid"`
	Type          string            `json:"type"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers"`
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
	var env envelope
	if err := json.Unmarshal(m.Content, &env); err != nil {
		return Result{}, fmt.Errorf("logical message with prefix %q at LSN %X/%X: content is not a JSON envelope: %w",
			m.Prefix, uint32(m.LSN>>32), uint32(m.LSN), err)
	}
	if env.ID == "" {
		return Result{}, fmt.Errorf("logical message with prefix %q at LSN %X/%X: envelope has no \"id\"",
			m.Prefix, uint32(m.LSN>>32), uint32(m.LSN))
	}
	ev := &Event{
		Table:     "message:" + string(m.Prefix),
		Topic:     r.topic([]byte(env.AggregateType)),
		ID:        env.ID,
		Timestamp: d.commitAt,
		Partition: -1,
		Headers:   []Header{{Key: "id", Value: []byte(env.ID)}},
	}
	if env.AggregateID != nil {
		ev.Key = []byte(*env.AggregateID)
	}
	if env.Type != "" {
		ev.Headers = append(ev.Headers, Header{Key: "type", Value: []byte(env.Type)})
	}
	for k, v := range env.Headers {
		ev.Headers = append(ev.Headers, Header{Key: k, Value: []byte(v)})
	}
	switch {
	case len(env.Payload) == 0 || string(env.Payload) == "null":
		ev.Value = nil
	case env.Payload[0] == '"':
		// A JSON string carries a non-JSON payload: publish its text.
		var s string
		if err := json.Unmarshal(env.Payload, &s); err != nil {
			return Result{}, err
		}
		ev.Value = []byte(s)
	default:
		ev.Value = []byte(env.Payload)
	}
	return Result{Kind: KindEvent, Event: ev}, nil
}
