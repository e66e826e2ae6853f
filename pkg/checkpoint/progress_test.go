package checkpoint

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	in := Record{
		Slot: "outbox_relay", SystemID: "7312345678901234567", Timeline: 2, LSN: 0x16B3748,
		Partial:  &Partial{CommitLSN: 0x16B4000, Events: 3},
		Snapshot: &SnapshotProgress{Tables: []string{"public.outbox"}},
		Time:     time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Version: "v1", Fingerprint: "abc",
	}
	b := in.Marshal()
	for _, want := range []string{`"format":1`, `"lsn":"0/16B3748"`, `"commit_lsn":"0/16B4000"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	out, err := UnmarshalRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}
	if slot, sys, ok := SplitRecordKey(in.Key()); !ok || slot != in.Slot || sys != in.SystemID {
		t.Fatalf("key %q split into %q %q %v", in.Key(), slot, sys, ok)
	}
}

func TestRecordRejects(t *testing.T) {
	for _, b := range []string{`{`, `{"format":2,"slot":"s","system_id":"1","lsn":"0/1"}`, `{"format":1,"slot":"s","system_id":"1","lsn":"zz"}`, `{"format":1,"lsn":"0/1"}`} {
		if _, err := UnmarshalRecord([]byte(b)); err == nil {
			t.Errorf("%s: no error", b)
		}
	}
}
