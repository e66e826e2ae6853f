package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// link is the producer's connection to one broker, opened again on the next
// request after it failed or was closed, as sarama's *Broker is.
//
// sarama opens and authenticates it (TLS, SASL, API versions) as a broker
// of its own that no client knows of, so that nothing else sends on it; the
// producer then writes its own produce requests on the connection sarama
// dialed and reads their responses (wire.go). One request is in flight at a
// time: the producer sends the next only after the last one's outcome.
//
// Brokers that re-authenticate sessions (connections.max.reauth.ms) close
// such a connection when its session ends, as sarama only re-authenticates
// requests it sends itself; the request in flight then fails like any broken
// connection and is sent again on a new one.
type link struct {
	addr    string
	conf    *sarama.Config // sarama's, for timeouts, TLS and SASL
	max     int16          // produce version wanted, lowered to what the broker offers
	timeout int32          // produce timeout, ms
	done    chan<- result  // where outcomes go
	quit    <-chan struct{}

	mu  sync.Mutex
	cur *session
}

// session is one connection of a link.
type session struct {
	br      *sarama.Broker
	c       net.Conn
	r       *bufio.Reader
	version int16
	enc     encoder
	corr    int32
	sent    chan *request // the request in flight, for the reader
	closed  chan struct{}
	once    sync.Once
}

// relink returns l if it goes to addr, and otherwise closes l (if any) and
// returns a new link to addr whose outcomes go to done until quit closes.
func relink(l *link, addr string, conf *sarama.Config, done chan<- result, quit <-chan struct{}) *link {
	if l != nil && l.addr == addr {
		return l
	}
	if l != nil {
		_ = l.Close()
	}
	return &link{addr: addr, conf: conf, max: produceVersion(conf.Version), done: done, quit: quit,
		timeout: int32(conf.Producer.Timeout / time.Millisecond)} //nolint:gosec // G115: a validated timeout of seconds
}

// produce writes req, connecting first if need be. Its outcome arrives on
// the link's done channel unless produce returns an error, in which case
// nothing of req was written.
func (l *link) produce(req *request) error {
	s, err := l.session()
	if err != nil {
		return err
	}
	s.corr++
	b, err := s.enc.request(s.version, s.corr, l.timeout, req.batches)
	if err != nil {
		return err
	}
	req.corr, req.version = s.corr, s.version
	if err := s.c.SetWriteDeadline(time.Now().Add(l.conf.Net.WriteTimeout)); err != nil {
		l.drop(s)
		return err
	}
	if _, err := s.c.Write(b); err != nil {
		// Part of it may have been written: the connection is unusable.
		l.drop(s)
		return err
	}
	s.sent <- req
	return nil
}

func (l *link) session() (*session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil {
		return l.cur, nil
	}
	s, err := l.open()
	if err != nil {
		return nil, err
	}
	l.cur = s
	go l.read(s)
	return s, nil
}

// open connects through a sarama broker of its own, which leaves the
// connection idle once it has answered an ApiVersions request.
func (l *link) open() (*session, error) {
	conf := *l.conf
	capture := &captureDialer{next: l.conf.Net.Proxy.Dialer, timeout: l.conf.Net.DialTimeout}
	if conf.Net.TLS.Enable {
		// Done by the dialer, so that what it captures is what sarama
		// reads and writes.
		capture.tls = serverNameTLS(l.addr, conf.Net.TLS.Config)
		conf.Net.TLS.Enable = false
	}
	conf.Net.Proxy.Enable, conf.Net.Proxy.Dialer = true, capture
	br := sarama.NewBroker(l.addr)
	if err := br.Open(&conf); err != nil && !errors.Is(err, sarama.ErrAlreadyConnected) {
		return nil, err
	}
	vs, err := br.ApiVersions(&sarama.ApiVersionsRequest{})
	if err == nil && vs.ErrorCode != int16(sarama.ErrNoError) {
		err = sarama.KError(vs.ErrorCode)
	}
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	lowest, highest := int16(-1), int16(-1)
	for _, k := range vs.ApiKeys {
		if k.ApiKey == apiProduce {
			lowest, highest = k.MinVersion, k.MaxVersion
		}
	}
	v := min(l.max, highest)
	if v < 3 || v < lowest {
		_ = br.Close()
		return nil, fmt.Errorf("broker %s takes produce requests v%d to v%d, the relay writes v3 to v%d (kafka.version): %w",
			l.addr, lowest, highest, l.max, sarama.ErrUnsupportedVersion)
	}
	s := &session{
		br: br, c: capture.conn, r: bufio.NewReaderSize(capture.conn, 4096), version: v,
		enc:    encoder{clientID: l.conf.ClientID, codec: l.conf.Producer.Compression, level: l.conf.Producer.CompressionLevel},
		sent:   make(chan *request, 1),
		closed: make(chan struct{}),
	}
	return s, nil
}

// read delivers the outcome of each request written on s, until s is
// closed or fails.
func (l *link) read(s *session) {
	var hdr [8]byte
	var body []byte
	for {
		var req *request
		select {
		case req = <-s.sent:
		case <-s.closed:
			// A request written as the session closed still needs its
			// outcome.
			select {
			case req = <-s.sent:
				l.deliver(req, net.ErrClosed)
			default:
			}
			return
		}
		err := s.c.SetReadDeadline(time.Now().Add(l.conf.Net.ReadTimeout))
		if err == nil {
			_, err = io.ReadFull(s.r, hdr[:])
		}
		if err == nil {
			size := int32(binary.BigEndian.Uint32(hdr[:]))  //nolint:gosec // G115: as sent
			corr := int32(binary.BigEndian.Uint32(hdr[4:])) //nolint:gosec // G115: as sent
			switch {
			case corr != req.corr:
				err = sarama.PacketDecodingError{Info: fmt.Sprintf("correlation ID didn't match, wanted %d, got %d", req.corr, corr)}
			case size < 4 || size > 16<<20:
				err = sarama.PacketDecodingError{Info: fmt.Sprintf("produce response of %d bytes", size)}
			default:
				body = grow(body, int(size-4))
				if _, err = io.ReadFull(s.r, body); err == nil {
					err = req.readResponse(body)
				}
			}
		}
		if err != nil {
			l.drop(s)
		}
		if !l.deliver(req, err) || err != nil {
			return
		}
	}
}

// deliver hands req's outcome to the producer, unless it has stopped.
func (l *link) deliver(req *request, err error) bool {
	select {
	case l.done <- result{req: req, err: err}:
		return true
	case <-l.quit:
		return false
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// drop closes s and forgets it, so that the next request connects afresh.
func (l *link) drop(s *session) {
	l.mu.Lock()
	if l.cur == s {
		l.cur = nil
	}
	l.mu.Unlock()
	s.once.Do(func() {
		close(s.closed)
		_ = s.br.Close()
	})
}

// Close closes the connection; the next request opens another.
func (l *link) Close() error {
	l.mu.Lock()
	s := l.cur
	l.mu.Unlock()
	if s != nil {
		l.drop(s)
	}
	return nil
}

// captureDialer dials with next, does TLS when asked to, and keeps the
// connection it returns.
type captureDialer struct {
	next interface {
		Dial(network, addr string) (net.Conn, error)
	}
	tls     *tls.Config
	timeout time.Duration
	conn    net.Conn
}

func (d *captureDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.next.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	if d.tls != nil {
		tc := tls.Client(c, d.tls)
		ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		c = tc
	}
	d.conn = c
	return c, nil
}

// serverNameTLS is cfg with the server name to verify set from addr when
// cfg has none, as sarama sets it.
func serverNameTLS(addr string, cfg *tls.Config) *tls.Config {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName != "" {
		return cfg
	}
	c := cfg.Clone()
	c.ServerName, _, _ = net.SplitHostPort(addr)
	return c
}
