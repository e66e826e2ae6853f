package pgoutput_test

import (
	"errors"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput"
	"github.com/relay-dev/relay/pkg/decode/internal/pgoutput/pgoutputtest"
)

// BenchmarkParseInsert parses one outbox insert (five text columns, a
// ~200-byte JSON payload) with this package and with pglogrepl.Parse, the
// parser the relay would otherwise use: the comparison the package doc cites.
func BenchmarkParseInsert(b *testing.B) {
	data := pgoutputtest.Insert(16390, outboxRow)
	b.Run("Parser", func(b *testing.B) {
		var p pgoutput.Parser
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := p.Parse(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pglogrepl.Parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := pglogrepl.Parse(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// pglogreplPanics reports whether pglogrepl.Parse panics on data.
func pglogreplPanics(data []byte) (panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	_, _ = pglogrepl.Parse(data)
	return false
}

// The other reason the package doc gives: a truncated message makes
// pglogrepl.Parse index past its input and panic, where Parse returns
// ErrMalformed. If a pglogrepl upgrade makes this test fail, the package
// doc's reasoning needs another look.
func TestPglogreplPanicsOnTruncatedInput(t *testing.T) {
	data := pgoutputtest.Insert(16390, outboxRow)
	var p pgoutput.Parser
	panics := 0
	for n := 0; n < len(data); n++ {
		msg := data[:n:n]
		if _, err := p.Parse(msg); !errors.Is(err, pgoutput.ErrMalformed) {
			t.Fatalf("Parse of the insert truncated to %d bytes: %v, want ErrMalformed", n, err)
		}
		if pglogreplPanics(msg) {
			panics++
		}
	}
	t.Logf("pglogrepl.Parse panicked on %d of the %d truncations of a %d-byte insert", panics, len(data), len(data))
	if panics == 0 {
		t.Fatal("pglogrepl.Parse no longer panics on truncated input")
	}
}
