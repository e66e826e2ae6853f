// Package decode turns pgoutput logical replication messages, and outbox rows
// read with SQL for a snapshot or a replay (RowMapper), into outbox events;
// ColumnTypeOK holds the column type rules that relay check and the start-up
// checks share with it.
//
// Decoder reads the pgoutput wire format (protocol version 1) with the parser
// in internal/pgoutput, which does not copy: tuple values alias the message
// buffer, and the Events Decoder returns own copies of what they keep. It learns
// the column layout of each relation from Relation messages, maps inserts into
// configured outbox tables to Events following Debezium's Outbox Event Router
// conventions (topic from the route-by column, key, payload, id and type
// headers), turns transactional logical messages with a configured prefix into
// Events, and reports transaction boundaries so the caller can track LSNs.
//
// Every error Decoder returns is fatal for the stream: skipping a message the
// relay cannot map would silently lose an event, so it stops instead and names
// the table and column at fault.
package decode
