package sink

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/xdg-go/scram"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

// The exchanges published with SCRAM: RFC 5802 section 5 (SHA-1) and RFC
// 7677 section 3 (SHA-256), user "user", password "pencil".
var scramVectors = []struct {
	name                                         string
	hash                                         scram.HashGeneratorFcn
	nonce, serverFirst, clientFinal, serverFinal string
}{
	{"SHA-1", scram.SHA1, "fyko+d2lbbFgONRv9qkxdawL",
		"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
		"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="},
	{"SHA-256", scram.SHA256, "rOprNGfwEbeRWgbNEkqO",
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
}

func TestSCRAMPublishedExchanges(t *testing.T) {
	for _, v := range scramVectors {
		t.Run(v.name, func(t *testing.T) {
			c := &scramClient{hash: v.hash, nonce: func() string { return v.nonce }}
			if err := c.Begin("user", "pencil", ""); err != nil {
				t.Fatal(err)
			}
			first, err := c.Step("")
			if err != nil || first != "n,,n=user,r="+v.nonce {
				t.Fatalf("client-first = %q, %v", first, err)
			}
			final, err := c.Step(v.serverFirst)
			if err != nil || final != v.clientFinal {
				t.Fatalf("client-final = %q, %v; want %q", final, err, v.clientFinal)
			}
			if c.Done() {
				t.Fatal("done before the server proved itself")
			}
			if _, err := c.Step(v.serverFinal); err != nil || !c.Done() {
				t.Fatalf("server-final: %v, done %t", err, c.Done())
			}
		})
	}
}

func TestSCRAMRefusesBadServers(t *testing.T) {
	v := scramVectors[1]
	start := func(t *testing.T) *scramClient {
		c := &scramClient{hash: v.hash, nonce: func() string { return v.nonce }}
		if err := c.Begin("user", "pencil", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Step(""); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, sf := range []string{
		"r=someoneElsesNonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", // not our conversation
		"r=" + v.nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",   // nonce not extended
		"r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",         // a proof cheap to attack offline
		"r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095",      // below Kafka's own minimum
		"r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100000000", // a PBKDF2 denial of service
		"r=" + v.nonce + "x,s=!!!,i=4096",
		"m=ext,r=" + v.nonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"garbage",
	} {
		if _, err := start(t).Step(sf); err == nil {
			t.Errorf("server-first %q accepted", sf)
		}
	}
	// A server-first error is a rejection.
	if _, err := start(t).Step("e=unknown-user"); !isAuthFailure(err) {
		t.Errorf("e= in server-first: %v, want an auth failure", err)
	}
	for _, sf := range []string{"v=AAAA", "v=", "e=invalid-proof"} {
		c := start(t)
		if _, err := c.Step(v.serverFirst); err != nil {
			t.Fatal(err)
		}
		_, err := c.Step(sf)
		if err == nil || c.Done() {
			t.Errorf("server-final %q accepted", sf)
		}
		if sf == "e=invalid-proof" && !isAuthFailure(err) {
			t.Errorf("server-final %q: %v, want an auth failure", sf, err)
		}
	}
}

func TestSCRAMEscapesNames(t *testing.T) {
	c := &scramClient{hash: scram.SHA256}
	if err := c.Begin("a=b,c", "pw", "a=b,c"); err != nil {
		t.Fatal(err)
	}
	first, _ := c.Step("")
	if want := "n,a=a=3Db=2Cc,n=a=3Db=2Cc,r=" + c.clientNonce; first != want || c.clientNonce == "" {
		t.Errorf("client-first = %q, want %q", first, want)
	}
	if strings.ContainsAny(c.clientNonce, ",=") {
		t.Errorf("nonce %q has characters SCRAM forbids", c.clientNonce)
	}
}

// startSASLBroker starts kfake with one user per mechanism.
func startSASLBroker(t *testing.T, extra ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plainuser", "plain-secret-1"),
		kfake.Superuser("SCRAM-SHA-256", "user256", "scram256-secret-1"),
		kfake.Superuser("SCRAM-SHA-512", "user512", "scram512-secret-1"),
	}, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func saslKafka(addr, mech, user, pass string) config.Kafka {
	k := config.Default().Kafka
	k.Brokers = []string{addr}
	k.SASL = config.SASL{Mechanism: config.SASLMechanism(mech), Username: user, Password: config.Secret(pass)}
	return k
}

func TestHandshakeSASL(t *testing.T) {
	c := startSASLBroker(t)
	addr := c.ListenAddrs()[0]
	for _, u := range [][3]string{{"PLAIN", "plainuser", "plain-secret-1"}, {"SCRAM-SHA-256", "user256", "scram256-secret-1"}, {"SCRAM-SHA-512", "user512", "scram512-secret-1"}} {
		k := saslKafka(addr, u[0], u[1], u[2])
		sc, err := SaramaConfig(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := Handshake(k, sc); err != nil {
			t.Errorf("%s: %v", u[0], err)
		}
		// And through sarama's own client, as the producer connects.
		sc.Metadata.Full = true
		cl, err := sarama.NewClient(k.Brokers, sc)
		if err != nil {
			t.Errorf("%s: sarama client: %v", u[0], err)
			continue
		}
		cl.Close()
	}
}

// TestHandshakeRejected answers every login as Kafka does when it refuses one
// (error 58 with a message, KIP-152): the relay must stop, naming mechanism
// and user but not the password, after one attempt.
func TestHandshakeRejected(t *testing.T) {
	c := startSASLBroker(t)
	var attempts atomic.Int32
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		attempts.Add(1)
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = 58
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-512"} {
		attempts.Store(0)
		k := saslKafka(c.ListenAddrs()[0], mech, "someone", "the-wrong-secret")
		sc, err := SaramaConfig(k)
		if err != nil {
			t.Fatal(err)
		}
		err = Handshake(k, sc)
		if !fault.IsFatal(err) {
			t.Fatalf("%s: %v, want a fatal error", mech, err)
		}
		msg := err.Error()
		for _, want := range []string{mech, `"someone"`, "Invalid username or password"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error lacks %q: %s", mech, want, msg)
			}
		}
		if strings.Contains(msg, "the-wrong-secret") {
			t.Errorf("%s: error shows the password: %s", mech, msg)
		}
		if n := attempts.Load(); n != 1 {
			t.Errorf("%s: %d login attempts, want 1", mech, n)
		}
	}
}

func TestAuthErrorScrubsPassword(t *testing.T) {
	s := config.SASL{Mechanism: "PLAIN", Username: "u", Password: "s3cr3t-pw"}
	err := authError(s, errors.New("broker said: bad password s3cr3t-pw"))
	if strings.Contains(err.Error(), "s3cr3t-pw") || !fault.IsFatal(err) {
		t.Errorf("authError = %v", err)
	}
}

func TestHandshakeUnreachableIsRetryable(t *testing.T) {
	c := startSASLBroker(t)
	addr := c.ListenAddrs()[0]
	c.Close()
	k := saslKafka(addr, "SCRAM-SHA-256", "user256", "scram256-secret-1")
	sc, err := SaramaConfig(k)
	if err != nil {
		t.Fatal(err)
	}
	err = Handshake(k, sc)
	if err == nil || fault.IsFatal(err) {
		t.Errorf("unreachable broker: %v, want a retryable error", err)
	}
}
