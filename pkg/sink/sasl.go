package sink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

func configureSASL(sc *sarama.Config, s config.SASL) error {
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = s.Username
	sc.Net.SASL.Password = s.Password.Reveal()
	switch s.Mechanism {
	case config.SASLPlain:
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case config.SASLScramSHA256:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
	case config.SASLScramSHA512:
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	default:
		return fmt.Errorf("kafka.sasl.mechanism: %w", s.Mechanism.Validate())
	}
	return nil
}

// scramClient adapts xdg-go/scram's client to sarama's SCRAMClient, as
// Kafka speaks SCRAM (KIP-84): no channel binding, and the password used as
// UTF-8 bytes without SASLprep, because Kafka's ScramFormatter does not
// normalise either; a SASLprep'd password would not match what kafka-configs
// stored for non-ASCII passwords. Around the library it bounds the PBKDF2
// work a broker can ask for, insists that the server extend our nonce rather
// than echo it, and marks the server's e= answers so that a refused login is
// told apart from a broken exchange.
type scramClient struct {
	hash  scram.HashGeneratorFcn
	nonce scram.NonceGeneratorFcn // nil: the library's, 24 random bytes; tests pin it

	conv        *scram.ClientConversation
	step        int
	clientNonce string
}

// PBKDF2 iterations a server may ask for. Kafka stores credentials with at
// least 4096 (its ScramMechanism minimum, and RFC 7677's) and at most 16384;
// fewer would let a server posing as the broker make the proof cheap to
// attack offline, more would let it make every login burn CPU.
const (
	scramMinIterations = 4096
	scramMaxIterations = 1 << 16
)

// errSCRAMServer marks exchanges that failed on what the server sent rather
// than on our side; with a valid server, a wrong password is the cause.
var errSCRAMServer = errors.New("SCRAM server rejected the exchange")

func (c *scramClient) Begin(user, pass, authzID string) error {
	cl, err := c.hash.NewClientUnprepped(user, pass, authzID)
	if err != nil {
		return fmt.Errorf("SCRAM: %w", err)
	}
	cl.WithMinIterations(scramMinIterations)
	if c.nonce != nil {
		cl.WithNonceGenerator(c.nonce)
	}
	c.conv, c.step, c.clientNonce = cl.NewConversation(), 0, ""
	return nil
}

// Done reports a finished exchange in which the server proved it holds the
// user's credentials; sarama stops stepping then.
func (c *scramClient) Done() bool { return c.conv != nil && c.conv.Valid() }

func (c *scramClient) Step(challenge string) (string, error) {
	if c.conv == nil {
		return "", errors.New("SCRAM: Step before Begin")
	}
	c.step++
	if e, ok := strings.CutPrefix(challenge, "e="); ok {
		return "", fmt.Errorf("%w: %s", errSCRAMServer, e)
	}
	if c.step == 2 {
		if err := c.checkServerFirst(challenge); err != nil {
			return "", err
		}
	}
	resp, err := c.conv.Step(challenge)
	switch {
	case err != nil && c.step == 3:
		// The server did not prove it knows our credentials: it may not be
		// the broker we meant to reach.
		return "", fmt.Errorf("SCRAM: the broker could not prove it holds the user's credentials: %w", err)
	case err != nil:
		return "", fmt.Errorf("SCRAM: %w", err)
	case c.step == 1:
		// client-first-message: gs2 header, n=<user>, r=<nonce>; names are
		// escaped, so the first ",r=" starts the nonce.
		_, c.clientNonce, _ = strings.Cut(resp, ",r=")
	}
	return resp, nil
}

// checkServerFirst refuses what the library would accept but the relay does
// not: an iteration count above scramMaxIterations, and a server nonce that
// merely repeats ours instead of adding its own part.
func (c *scramClient) checkServerFirst(msg string) error {
	for _, kv := range strings.Split(msg, ",") {
		switch {
		case strings.HasPrefix(kv, "r="):
			if kv[2:] == c.clientNonce {
				return errors.New("SCRAM: server nonce does not extend the client nonce")
			}
		case strings.HasPrefix(kv, "i="):
			if n, err := strconv.Atoi(kv[2:]); err == nil && n > scramMaxIterations {
				return fmt.Errorf("SCRAM: server asks for %d iterations, more than %d", n, scramMaxIterations)
			}
		}
	}
	return nil
}

// isAuthFailure reports whether err means the broker refused our
// credentials, which no retry can change.
func isAuthFailure(err error) bool {
	return errors.Is(err, sarama.ErrSASLAuthenticationFailed) || errors.Is(err, errSCRAMServer)
}

// authError turns a refused login into a fatal error that says which
// mechanism and user were refused and never contains the password.
func authError(s config.SASL, err error) error {
	msg := err.Error()
	if s.Password != "" {
		msg = strings.ReplaceAll(msg, s.Password.Reveal(), "xxxxx")
	}
	return fault.Fatal(fmt.Errorf("kafka rejected SASL %s authentication for user %q: %s; retrying cannot fix this: check kafka.sasl.username and the password (kafka.sasl.password_file or RELAY_KAFKA_SASL_PASSWORD) and that the user exists on the brokers for %s",
		s.Mechanism, s.Username, msg, s.Mechanism))
}

// Handshake connects once to the seed brokers with the configured TLS and
// SASL and returns nil as soon as one accepts us. It runs before the producer
// is built because sarama, building an idempotent producer, asks for a
// producer id up to Producer.Transaction.Retry.Max times, each on a fresh
// connection with a fresh login: a wrong password would become dozens of
// failed logins (and possibly an account lockout) before the pipeline saw
// the error. A refused login is fatal; anything else (unreachable brokers,
// an untrusted certificate, which a rotated ca_file can fix) is returned as
// a retryable error. Without TLS and SASL there is nothing to check.
func Handshake(k config.Kafka, sc *sarama.Config) error {
	if !sc.Net.SASL.Enable && !sc.Net.TLS.Enable {
		return nil
	}
	var errs []error
	for _, addr := range k.Brokers {
		var err error
		if sc.Net.SASL.Enable {
			err = saslHandshake(addr, sc)
		} else {
			err = tlsHandshake(addr, sc)
		}
		switch {
		case err == nil:
			return nil
		case isAuthFailure(err):
			return authError(k.SASL, err)
		}
		errs = append(errs, fmt.Errorf("%s: %s", addr, describeTLSError(k.TLS, err)))
	}
	return fmt.Errorf("connecting to kafka brokers: %w", errors.Join(errs...))
}

func saslHandshake(addr string, sc *sarama.Config) error {
	b := sarama.NewBroker(addr)
	if err := b.Open(sc); err != nil {
		return err
	}
	defer b.Close()
	// Connected waits for Open's connect-and-authenticate to finish.
	ok, err := b.Connected()
	if err == nil && !ok {
		err = errors.New("connection closed during authentication")
	}
	return err
}

// tlsHandshake checks the broker's certificate the way sarama will. sarama
// itself reports a failed TLS handshake only on the request after it, and
// not at all when Open succeeds without SASL.
func tlsHandshake(addr string, sc *sarama.Config) error {
	tc := sc.Net.TLS.Config.Clone()
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}
		tc.ServerName = host
	}
	timeout := sc.Net.DialTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, tc)
	if err != nil {
		return err
	}
	return conn.Close()
}
