// Package testutil holds small helpers shared by the tests of several
// packages (cmd/relay, pkg/decode, test/). It has no dependencies, so
// importing it costs a test binary nothing.
package testutil

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that may be written and read concurrently: a
// subprocess's stdout and stderr, or a logger, write to it while the test
// polls String for a line it waits for.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
