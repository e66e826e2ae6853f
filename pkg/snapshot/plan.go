package snapshot

import (
	"slices"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
)

// Plan is what an attempt reads before it streams, and the snapshot state
// its progress records carry meanwhile.
type Plan struct {
	Read  []config.Table
	State checkpoint.SnapshotProgress
}

// TableName is how the progress record names a table: schema.table,
// unquoted, so that spelling variants of one table agree.
func TableName(t config.Table) string {
	schema, name, err := config.SplitTable(t.Table)
	if err != nil {
		return t.Table
	}
	return schema + "." + name
}

// Decide plans the snapshot of an attempt. created says the attempt has
// just created the slot (with an exported snapshot unless mode is never);
// prev is the snapshot state of the newest progress record (nil: none, or a
// record from a relay that kept no snapshot state).
//
// The state lists the tables whose rows before the stream are covered:
// read in full, or deliberately not (mode never, or a slot that predates
// snapshot state, whose tables have been streamed all along). Tables no
// longer configured drop out, so a table configured again is read again.
func Decide(mode config.SnapshotMode, tables []config.Table, created bool, prev *checkpoint.SnapshotProgress) Plan {
	all := make([]string, 0, len(tables))
	for _, t := range tables {
		all = append(all, TableName(t))
	}
	covered := func(names []string) []string {
		var out []string
		for _, n := range all {
			if slices.Contains(names, n) {
				out = append(out, n)
			}
		}
		return out
	}
	switch {
	case mode == config.SnapshotNever, !created && prev == nil:
		return Plan{State: checkpoint.SnapshotProgress{Done: true, Tables: all}}
	case created:
		return Plan{Read: tables, State: checkpoint.SnapshotProgress{}}
	}
	have := covered(prev.Tables)
	var read []config.Table
	for _, t := range tables {
		if !slices.Contains(have, TableName(t)) {
			read = append(read, t)
		}
	}
	return Plan{Read: read, State: checkpoint.SnapshotProgress{Done: len(read) == 0, Tables: have}}
}
