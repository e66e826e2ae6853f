//go:build linux

package netio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// pair returns a wrapped client and the plain server end of a loopback TCP
// connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	if _, ok := w.(*conn); !ok {
		t.Fatalf("Wrap(%T) = %T, want the raw-syscall conn", c, w)
	}
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe) = %T, want the pipe itself", got)
	}
}

// A write larger than both socket buffers goes out in pieces, waiting for
// the reader in between, and a read returns what has arrived.
func TestLargeWriteAndReads(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	var g errgroup.Group
	g.Go(func() error {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		return err
	})
	got := make([]byte, len(want))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the server read other bytes than were written")
	}

	g.Go(func() error {
		_, err := s.Write(want)
		return err
	})
	back := make([]byte, len(want))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, want) {
		t.Fatal("the wrapped conn read other bytes than were written")
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
}

func TestEOF(t *testing.T) {
	c, s := pair(t)
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want \"bye\" and no error", got, err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after EOF: %v, want io.EOF", err)
	}
}

// pgconn and sarama tell a deadline from a broken connection by these.
func TestDeadlineAndCloseErrors(t *testing.T) {
	c, _ := pair(t)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a net.Error that is a timeout and os.ErrDeadlineExceeded", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}

// A peer that resets the connection makes a write fail with the errno,
// wrapped like package net wraps it.
func TestWriteToResetPeer(t *testing.T) {
	c, s := pair(t)
	if err := s.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	buf := make([]byte, 64<<10)
	var err error
	for range 100 {
		if _, err = c.Write(buf); err != nil {
			break
		}
	}
	var op *net.OpError
	reset := errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	if !errors.As(err, &op) || op.Op != "write" || !reset {
		t.Fatalf("write to a reset peer: %v, want a *net.OpError for write wrapping ECONNRESET or EPIPE", err)
	}
}

func TestDialFuncWraps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var d net.Dialer
	c, err := DialFunc(d.DialContext)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*conn); !ok {
		t.Fatalf("DialFunc made a %T, want the raw-syscall conn", c)
	}
	refused := func(context.Context, string, string) (net.Conn, error) { return nil, syscall.ECONNREFUSED }
	if c, err := DialFunc(refused)(context.Background(), "tcp", "x:1"); c != nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("DialFunc over a failing dial = %v, %v; want nil and the dial's error", c, err)
	}
}

// TestReadWriteDoNotAllocate pins what the wrapper is for on the steady
// path: an event costs a read and a write per connection, and a callback
// built per call would escape through the RawConn interface.
func TestReadWriteDoNotAllocate(t *testing.T) {
	c, s := pair(t)
	out, in := []byte("status update"), make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := c.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, in[:len(out)]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, in[:len(out)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a write and a read through the wrapper allocate %.0f times, want none", allocs)
	}
}
