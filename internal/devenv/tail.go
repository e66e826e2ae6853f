package devenv

import (
	"strings"
	"sync"
)

// Tail keeps the last Max bytes written to it, for error messages and logs
// that must not grow without bound. It is safe for concurrent use.
type Tail struct {
	Max int

	mu      sync.Mutex
	buf     []byte
	dropped bool
}

func (t *Tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.Max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(b), nil
}

// String returns what is kept, without the partial first line once earlier
// bytes were dropped.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.buf)
	if t.dropped {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}
