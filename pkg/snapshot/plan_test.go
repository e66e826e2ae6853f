package snapshot

import (
	"reflect"
	"testing"

	"github.com/relay-dev/relay/pkg/checkpoint"
	"github.com/relay-dev/relay/pkg/config"
)

func TestDecide(t *testing.T) {
	a, b := config.Table{Table: "outbox"}, config.Table{Table: `app."Events"`}
	both := []config.Table{a, b}
	names := func(p Plan) []string {
		var out []string
		for _, t := range p.Read {
			out = append(out, TableName(t))
		}
		return out
	}
	cases := []struct {
		name    string
		mode    config.SnapshotMode
		created bool
		prev    *checkpoint.SnapshotProgress
		read    []string
		state   checkpoint.SnapshotProgress
	}{
		{"new slot", config.SnapshotInitial, true, nil, []string{"public.outbox", "app.Events"}, checkpoint.SnapshotProgress{}},
		{"new slot, never", config.SnapshotNever, true, nil, nil, checkpoint.SnapshotProgress{Done: true, Tables: []string{"public.outbox", "app.Events"}}},
		{"slot from before snapshot state", config.SnapshotInitial, false, nil, nil, checkpoint.SnapshotProgress{Done: true, Tables: []string{"public.outbox", "app.Events"}}},
		{"interrupted after the first table", config.SnapshotInitial, false, &checkpoint.SnapshotProgress{Tables: []string{"public.outbox"}},
			[]string{"app.Events"}, checkpoint.SnapshotProgress{Tables: []string{"public.outbox"}}},
		{"interrupted, now never", config.SnapshotNever, false, &checkpoint.SnapshotProgress{}, nil, checkpoint.SnapshotProgress{Done: true, Tables: []string{"public.outbox", "app.Events"}}},
		{"done, table added", config.SnapshotInitial, false, &checkpoint.SnapshotProgress{Done: true, Tables: []string{"public.outbox", "public.gone"}},
			[]string{"app.Events"}, checkpoint.SnapshotProgress{Tables: []string{"public.outbox"}}},
		{"done, nothing new", config.SnapshotInitialOnly, false, &checkpoint.SnapshotProgress{Done: true, Tables: []string{"app.Events", "public.outbox"}},
			nil, checkpoint.SnapshotProgress{Done: true, Tables: []string{"public.outbox", "app.Events"}}},
	}
	for _, c := range cases {
		p := Decide(c.mode, both, c.created, c.prev)
		if !reflect.DeepEqual(names(p), c.read) || !reflect.DeepEqual(p.State, c.state) {
			t.Errorf("%s: read %v state %+v, want %v %+v", c.name, names(p), p.State, c.read, c.state)
		}
	}
}
