package checkpoint

import (
	"bytes"
	"encoding/json"
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

// marshalReflect is what Marshal must match: encoding/json on recordJSON,
// which is how records were written before Marshal appended the fields
// itself.
func marshalReflect(r Record) []byte {
	j := recordJSON{
		Format: recordFormat, Slot: r.Slot, SystemID: r.SystemID, Timeline: r.Timeline,
		LSN: r.LSN.String(), Snapshot: r.Snapshot, Time: r.Time.UTC(), Version: r.Version, Fingerprint: r.Fingerprint,
	}
	if r.Partial != nil {
		j.Partial = &partialJSON{CommitLSN: r.Partial.CommitLSN.String(), Events: r.Partial.Events}
	}
	b, _ := json.Marshal(j)
	return b
}

// TestMarshalMatchesEncodingJSON: the appended encoding is byte for byte
// encoding/json's, with and without each optional part and for strings
// that need escaping.
func TestMarshalMatchesEncodingJSON(t *testing.T) {
	base := Record{Slot: "relay_orders", SystemID: "7301234567890123456", Timeline: 3, LSN: 0x16B374D848,
		Time: time.Date(2026, 12, 2, 7, 1, 2, 345678900, time.FixedZone("CET", 3600)), Version: "v1.4.0-3-gabc", Fingerprint: "9f86d081884c7d65"}
	odd := []string{"", `quo"te`, `back\slash`, "<tag>&amp;", "tab\tnl\n", "h\u00e9llo", "line\u2028sep", "bad\xffutf8", "\x00"}
	var cases []Record
	cases = append(cases, base, Record{})
	for _, s := range odd {
		r := base
		r.Slot, r.Version, r.Fingerprint = s, s, s
		cases = append(cases, r)
	}
	for _, sp := range []*SnapshotProgress{
		{}, {Done: true, Tables: []string{}}, {Tables: []string{"public.outbox", `we"ird.t<a>ble`}, Rows: 12, RowsEstimate: 40000},
		{Done: true, Tables: []string{"s.t"}, RowsEstimate: -1},
	} {
		r := base
		r.Snapshot = sp
		cases = append(cases, r)
	}
	for _, p := range []*Partial{{}, {CommitLSN: 0xFFFFFFFFFFFFFFFF, Events: 17}} {
		r := base
		r.Partial = p
		r.Snapshot = &SnapshotProgress{Done: true, Tables: []string{"public.outbox"}}
		cases = append(cases, r)
	}
	for _, tm := range []time.Time{{}, time.Unix(0, 1), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} {
		r := base
		r.Time = tm
		cases = append(cases, r)
	}
	for i, r := range cases {
		if got, want := r.Marshal(), marshalReflect(r); !bytes.Equal(got, want) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// BenchmarkMarshal compares Marshal with encoding/json on the same record.
func BenchmarkMarshal(b *testing.B) {
	r := Record{Slot: "relay_orders", SystemID: "7301234567890123456", Timeline: 1, LSN: 0x16B374D848, Time: time.Now(),
		Version: "v1.4.0", Fingerprint: "9f86d081884c7d65", Snapshot: &SnapshotProgress{Done: true, Tables: []string{"public.outbox"}}}
	for name, marshal := range map[string]func(Record) []byte{"appended": Record.Marshal, "encoding-json": marshalReflect} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				marshal(r)
			}
		})
	}
}
