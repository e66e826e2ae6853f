package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// Record is the relay's own memory of how far it got: one per slot and
// database, kept in Kafka next to the events it vouches for. The slot is
// never confirmed past the newest record Kafka acknowledged, so at start-up a
// slot ahead of the record (or no slot at all where a record exists) proves
// that something other than this relay moved or replaced it, and events in
// between may never have been published.
type Record struct {
	Slot     string
	SystemID string // IDENTIFY_SYSTEM's systemid: which database cluster
	Timeline int32
	// LSN is the position every transaction committing at or before it is
	// in Kafka: the end of the newest such commit, or a WAL position the
	// relay reached while nothing was in flight.
	LSN pglogrepl.LSN
	// Partial, with exactly-once delivery, says that the first events of the
	// next transaction are already in Kafka.
	Partial *Partial
	// Snapshot, while a snapshot runs (Done false), says the stream must
	// not move past LSN (the slot's consistent point) until it completes;
	// afterwards it lists the tables whose earlier rows are covered.
	Snapshot *SnapshotProgress
	Time     time.Time
	Version  string
	// Fingerprint identifies the publication and table mapping that wrote
	// the record, so a relay that takes the slot over with another mapping
	// can say so.
	Fingerprint string
}

// Partial names a transaction that is only partly in Kafka.
type Partial struct {
	CommitLSN pglogrepl.LSN // the transaction's commit LSN, as pgoutput's Begin announces it
	Events    int           // how many of its events, in WAL order, are in Kafka
}

// SnapshotProgress is the state of the snapshot of the rows that existed
// before the stream.
type SnapshotProgress struct {
	Done bool `json:"done"` // every snapshot row is in Kafka
	// Tables (schema.table) whose rows before the stream are covered: read
	// in full and acknowledged, or deliberately not read (snapshot.mode
	// never, or a slot older than snapshot state). An interrupted snapshot
	// resumes with the tables not listed; a table added later is read.
	Tables []string `json:"tables"`
	// Rows and RowsEstimate report a running snapshot's progress: rows
	// handed to the producer by the current run, and the row count the
	// planner expects (pg_class.reltuples).
	Rows         int64 `json:"rows,omitempty"`
	RowsEstimate int64 `json:"rows_estimate,omitempty"`
}

// recordFormat versions the JSON encoding; readers refuse newer formats
// rather than misread them.
const recordFormat = 1

type recordJSON struct {
	Format      int               `json:"format"`
	Slot        string            `json:"slot"`
	SystemID    string            `json:"system_id"`
	Timeline    int32             `json:"timeline"`
	LSN         string            `json:"lsn"`
	Partial     *partialJSON      `json:"partial,omitempty"`
	Snapshot    *SnapshotProgress `json:"snapshot,omitempty"`
	Time        time.Time         `json:"time"`
	Version     string            `json:"relay_version"`
	Fingerprint string            `json:"fingerprint"`
}

type partialJSON struct {
	CommitLSN string `json:"commit_lsn"`
	Events    int    `json:"events"`
}

// RecordKey is the progress topic's key for a slot in a database cluster.
func RecordKey(slot, systemID string) []byte { return []byte(slot + "@" + systemID) }

// Key is the record's key in the progress topic.
func (r Record) Key() []byte { return RecordKey(r.Slot, r.SystemID) }

// Marshal encodes the record as JSON (LSNs in Postgres' X/X notation),
// byte for byte as encoding/json encodes recordJSON. It appends the fields
// itself: a record is written several times a second, and encoding/json's
// reflection was as much CPU as the produce request that carries the record.
func (r Record) Marshal() []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"format":`...)
	b = strconv.AppendInt(b, recordFormat, 10)
	b = appendField(b, "slot", r.Slot)
	b = appendField(b, "system_id", r.SystemID)
	b = append(b, `,"timeline":`...)
	b = strconv.AppendInt(b, int64(r.Timeline), 10)
	b = append(b, `,"lsn":`...)
	b = appendLSN(b, r.LSN)
	if r.Partial != nil {
		b = append(b, `,"partial":{"commit_lsn":`...)
		b = appendLSN(b, r.Partial.CommitLSN)
		b = append(b, `,"events":`...)
		b = strconv.AppendInt(b, int64(r.Partial.Events), 10)
		b = append(b, '}')
	}
	if sp := r.Snapshot; sp != nil {
		b = append(b, `,"snapshot":{"done":`...)
		b = strconv.AppendBool(b, sp.Done)
		b = append(b, `,"tables":`...)
		if sp.Tables == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '[')
			for i, t := range sp.Tables {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, t)
			}
			b = append(b, ']')
		}
		if sp.Rows != 0 {
			b = append(b, `,"rows":`...)
			b = strconv.AppendInt(b, sp.Rows, 10)
		}
		if sp.RowsEstimate != 0 {
			b = append(b, `,"rows_estimate":`...)
			b = strconv.AppendInt(b, sp.RowsEstimate, 10)
		}
		b = append(b, '}')
	}
	b = append(b, `,"time":"`...)
	b = r.Time.UTC().AppendFormat(b, time.RFC3339Nano) // time.Time's MarshalJSON, for years 0 to 9999
	b = append(b, '"')
	b = appendField(b, "relay_version", r.Version)
	b = appendField(b, "fingerprint", r.Fingerprint)
	return append(b, '}')
}

// appendLSN appends lsn quoted, in pglogrepl.LSN's String form (%X/%X).
func appendLSN(b []byte, lsn pglogrepl.LSN) []byte {
	b = append(b, '"')
	b = appendHex(b, uint64(lsn>>32))
	b = append(b, '/')
	b = appendHex(b, uint64(lsn&0xffffffff))
	return append(b, '"')
}

func appendHex(b []byte, v uint64) []byte {
	at := len(b)
	b = strconv.AppendUint(b, v, 16)
	for i := at; i < len(b); i++ {
		if c := b[i]; c >= 'a' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, value)
}

// appendJSONString quotes s as encoding/json does: names, LSNs and versions
// are plain ASCII and are copied; anything else goes through encoding/json
// so that its escaping (HTML characters, U+2028, invalid UTF-8) stays the
// same.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // cannot fail for a string
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// UnmarshalRecord decodes a record written by Marshal.
func UnmarshalRecord(b []byte) (Record, error) {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Record{}, fmt.Errorf("progress record: %w", err)
	}
	if j.Format != recordFormat {
		return Record{}, fmt.Errorf("progress record: format %d, this relay reads format %d (written by relay %s)", j.Format, recordFormat, j.Version)
	}
	lsn, err := pglogrepl.ParseLSN(j.LSN)
	if err != nil {
		return Record{}, fmt.Errorf("progress record: lsn %q: %w", j.LSN, err)
	}
	r := Record{
		Slot: j.Slot, SystemID: j.SystemID, Timeline: j.Timeline, LSN: lsn, Snapshot: j.Snapshot,
		Time: j.Time, Version: j.Version, Fingerprint: j.Fingerprint,
	}
	if j.Partial != nil {
		c, err := pglogrepl.ParseLSN(j.Partial.CommitLSN)
		if err != nil {
			return Record{}, fmt.Errorf("progress record: partial.commit_lsn %q: %w", j.Partial.CommitLSN, err)
		}
		r.Partial = &Partial{CommitLSN: c, Events: j.Partial.Events}
	}
	if r.Slot == "" || r.SystemID == "" {
		return Record{}, errors.New("progress record: slot and system_id are required")
	}
	return r, nil
}

// SplitRecordKey splits a progress topic key into slot and system id.
func SplitRecordKey(key []byte) (slot, systemID string, ok bool) {
	i := strings.LastIndexByte(string(key), '@')
	if i <= 0 || i == len(key)-1 {
		return "", "", false
	}
	return string(key[:i]), string(key[i+1:]), true
}
