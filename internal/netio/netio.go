// Package netio wraps the relay's long-lived TCP connections (the
// replication stream and the Kafka brokers) so that their reads and writes
// do not wake the Go runtime's monitor thread.
//
// The relay is idle most of the time and wakes once or twice per event.
// A read or write through package net is a system call the scheduler must
// be told about (entersyscall), because it might block and its P would be
// needed elsewhere. The first such call after an idle spell wakes sysmon,
// which then polls every 20 µs until the process is idle again, and with a
// single P it hands the P to another thread when a loopback write takes
// longer than one of those polls. At a few hundred events a second that
// costs more CPU than the work itself.
//
// The sockets are non-blocking (the netpoller set them so), so a read or
// write returns at once with data or EAGAIN: there is nothing for the
// scheduler to hand off. Conn issues them as raw system calls from within
// syscall.RawConn's callbacks, and waits for readiness on the netpoller
// like package net does. Deadlines, addresses and Close are the wrapped
// connection's.
//
// One thing is lost: during a metadata refresh sarama asks a broker's
// *net.TCPConn for a pending socket error and closes that connection early,
// and a wrapped connection is no *net.TCPConn. A broken connection is then
// found by its next read or write instead, which the producer retries.
package netio

import (
	"context"
	"net"
)

// Wrap returns c with raw-syscall reads and writes when c is a socket that
// exposes its descriptor on a platform where that is done (Linux), and c
// itself otherwise.
func Wrap(c net.Conn) net.Conn {
	return wrap(c)
}

// DialFunc returns dial with every connection it makes wrapped, in the shape
// of pgconn.Config.DialFunc.
func DialFunc(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	}
}
