package sink

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

func configureSASL(sc *sarama.Config, s config.SASL) error {
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = s.Username
	sc.Net.SASL.Password = s.Password.Reveal()
	switch s.Mechanism {
	case "PLAIN":
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
	case "SCRAM-SHA-512":
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
	default:
		return fmt.Errorf("kafka.sasl.mechanism: %s is not supported (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", s.Mechanism)
	}
	return nil
}

// scramClient is the client side of SCRAM (RFC 5802) as Kafka speaks it
// (KIP-84): no channel binding, and the password used as UTF-8 bytes without
// SASLprep, because Kafka's ScramFormatter does not normalise either; a
// SASLprep'd password would not match what kafka-configs stored for
// non-ASCII passwords.
type scramClient struct {
	hash func() hash.Hash

	user, pass, authzID string

	step        int
	nonce       string // ours, base64 of random bytes, never contains ','
	firstBare   string // client-first-message-bare, part of the AuthMessage
	serverProof []byte // the ServerSignature the server must send back
	done        bool
}

// scramMaxIterations bounds the PBKDF2 work a broker can make us do:
// Kafka itself refuses more than 16384.
const scramMaxIterations = 1 << 16

// errSCRAMServer marks exchanges that failed on what the server sent rather
// than on our side; with a valid server, a wrong password is the cause.
var errSCRAMServer = errors.New("SCRAM server rejected the exchange")

func (c *scramClient) Begin(user, pass, authzID string) error {
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	c.user, c.pass, c.authzID = user, pass, authzID
	c.nonce = base64.RawStdEncoding.EncodeToString(raw[:])
	c.step, c.done = 0, false
	return nil
}

func (c *scramClient) Done() bool { return c.done }

func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		return c.first(), nil
	case 2:
		return c.final(challenge)
	case 3:
		return "", c.verify(challenge)
	}
	return "", errors.New("SCRAM: exchange already finished")
}

func (c *scramClient) gs2Header() string {
	if c.authzID == "" {
		return "n,,"
	}
	return "n,a=" + scramEscape(c.authzID) + ","
}

func (c *scramClient) first() string {
	c.firstBare = "n=" + scramEscape(c.user) + ",r=" + c.nonce
	return c.gs2Header() + c.firstBare
}

func (c *scramClient) final(serverFirst string) (string, error) {
	attrs, err := scramAttrs(serverFirst)
	if err != nil {
		return "", err
	}
	if e, ok := attrs['e']; ok {
		return "", fmt.Errorf("%w: %s", errSCRAMServer, e)
	}
	if _, ok := attrs['m']; ok {
		return "", errors.New("SCRAM: server-first-message has a mandatory extension we do not support")
	}
	nonce := attrs['r']
	// The server extends our nonce; anything else is not an answer to us.
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return "", errors.New("SCRAM: server nonce does not extend the client nonce")
	}
	salt, err := base64.StdEncoding.DecodeString(attrs['s'])
	if err != nil || len(salt) == 0 {
		return "", errors.New("SCRAM: server-first-message has no valid salt")
	}
	iter, err := strconv.Atoi(attrs['i'])
	if err != nil || iter < 1 || iter > scramMaxIterations {
		return "", fmt.Errorf("SCRAM: server asks for %q iterations", attrs['i'])
	}

	size := c.hash().Size()
	salted, err := pbkdf2.Key(c.hash, c.pass, salt, iter, size)
	if err != nil {
		return "", fmt.Errorf("SCRAM: deriving the salted password: %w", err)
	}
	clientKey := c.hmac(salted, "Client Key")
	h := c.hash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)

	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(c.gs2Header())) + ",r=" + nonce
	authMessage := c.firstBare + "," + serverFirst + "," + withoutProof

	proof := c.hmac(storedKey, authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	c.serverProof = c.hmac(c.hmac(salted, "Server Key"), authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func (c *scramClient) verify(serverFinal string) error {
	attrs, err := scramAttrs(serverFinal)
	if err != nil {
		return err
	}
	if e, ok := attrs['e']; ok {
		return fmt.Errorf("%w: %s", errSCRAMServer, e)
	}
	sig, err := base64.StdEncoding.DecodeString(attrs['v'])
	if err != nil || !hmac.Equal(sig, c.serverProof) {
		// The server did not prove it knows our credentials: it may not be
		// the broker we meant to reach.
		return errors.New("SCRAM: server signature does not match; the broker could not prove it holds the user's credentials")
	}
	c.done = true
	return nil
}

func (c *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(c.hash, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// scramEscape encodes a saslname: ',' and '=' would otherwise end or
// confuse the attribute.
func scramEscape(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// scramAttrs parses "k=v,k=v" into single-letter attributes.
func scramAttrs(msg string) (map[byte]string, error) {
	attrs := map[byte]string{}
	for _, kv := range strings.Split(msg, ",") {
		if len(kv) < 2 || kv[1] != '=' {
			return nil, fmt.Errorf("SCRAM: malformed server message %q", msg)
		}
		attrs[kv[0]] = kv[2:]
	}
	return attrs, nil
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
