//go:build linux

package netio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

func wrap(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &conn{Conn: c, rc: rc}
	w.r.fn, w.w.fn = w.r.read, w.w.write
	return w
}

// conn keeps a call's state with the callback that RawConn runs, both made
// once: a closure built per call escapes through the RawConn interface and
// costs allocations on every read and write. Each direction has its own
// lock because package net lets a read and a write run at once.
type conn struct {
	net.Conn
	rc syscall.RawConn
	r  call
	w  call
}

type call struct {
	mu    sync.Mutex
	fn    func(fd uintptr) bool
	p     []byte
	n     int
	errno syscall.Errno
}

func (c *call) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.p))), uintptr(len(c.p))) //nolint:gosec // the conversion is in the call expression, as unsafe.Pointer rule 4 requires
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.n, c.errno = int(r), e
		return true
	}
}

func (c *call) write(fd uintptr) bool {
	for c.n < len(c.p) {
		rest := c.p[c.n:]
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest))) //nolint:gosec // as in read
		switch e {
		case 0:
			c.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.errno = e
			return true
		}
	}
	return true
}

// do runs fn through rc with p and returns what it did; the buffer is not
// kept past the call.
func (c *call) do(rc func(func(uintptr) bool) error, p []byte) (int, syscall.Errno, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.p, c.n, c.errno = p, 0, 0
	err := rc(c.fn)
	n, errno := c.n, c.errno
	c.p = nil
	return n, errno, err
}

func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, errno, err := c.r.do(c.rc.Read, p)
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, c.opError("read", errno)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (c *conn) Write(p []byte) (int, error) {
	n, errno, err := c.w.do(c.rc.Write, p)
	if err != nil {
		return n, err
	}
	if errno != 0 {
		return n, c.opError("write", errno)
	}
	return n, nil
}

// opError shapes a failed system call like package net's errors. Errors
// from the RawConn itself (a deadline, a closed connection) are package
// net's already.
func (c *conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
