package sink

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/relay-dev/relay/pkg/config"
	"github.com/relay-dev/relay/pkg/fault"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate for a server (with the given DNS names and
// 127.0.0.1) or a client.
func (ca *testCA) issue(t *testing.T, cn string, client bool, dns ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames, tmpl.IPAddresses = nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func writePEM(t *testing.T, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestHandshakeTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "relay test CA"), newTestCA(t, "someone else's CA")
	caFile, otherFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.pem")
	for path, pem := range map[string][]byte{caFile: ca.pem, otherFile: other.pem} {
		if err := os.WriteFile(path, pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clientCert, clientKey := writePEM(t, dir, "client", ca.issue(t, "relay", true))

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "kafka", false, "kafka.internal")},
		ClientCAs:    ca.pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]

	cases := []struct {
		name string
		tls  config.TLS
		want string // "" for success, else part of the error
	}{
		{"mtls", config.TLS{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}, ""},
		{"server-name", config.TLS{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "kafka.internal"}, ""},
		{"wrong-ca", config.TLS{CAFile: otherFile, CertFile: clientCert, KeyFile: clientKey}, "not signed by a CA in kafka.tls.ca_file"},
		{"system-ca", config.TLS{CertFile: clientCert, KeyFile: clientKey}, "set kafka.tls.ca_file"},
		{"wrong-name", config.TLS{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "kafka.example.com"}, "kafka.tls.server_name"},
		{"insecure", config.TLS{InsecureSkipVerify: true, CertFile: clientCert, KeyFile: clientKey}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := config.Default().Kafka
			k.Brokers = []string{addr}
			k.TLS = c.tls
			k.TLS.Enabled = true
			sc, err := SaramaConfig(k)
			if err != nil {
				t.Fatal(err)
			}
			err = Handshake(k, sc)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Handshake: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Handshake = %v, want an error with %q", err, c.want)
			case err != nil && fault.IsFatal(err):
				t.Fatalf("Handshake = %v: a certificate problem can be fixed by rotating files, so it must stay retryable", err)
			}
		})
	}
}

func TestDescribeTLSErrorClientCert(t *testing.T) {
	err := &net.OpError{Op: "remote error", Err: &tlsAlert{"tls: certificate required"}}
	if got := describeTLSError(config.TLS{}, err); !strings.Contains(got, "set kafka.tls.cert_file") {
		t.Errorf("describeTLSError = %q", got)
	}
}

type tlsAlert struct{ s string }

func (a *tlsAlert) Error() string { return "remote error: " + a.s }

func TestInsecureSettingsAreLogged(t *testing.T) {
	k := config.Default().Kafka
	if got := InsecureSettings(k); len(got) != 0 {
		t.Errorf("defaults are flagged: %v", got)
	}
	k.TLS = config.TLS{Enabled: true, InsecureSkipVerify: true}
	k.SASL = config.SASL{Mechanism: "PLAIN", Username: "u", Password: "p"}
	got := InsecureSettings(k)
	if len(got) != 1 || got[0].Setting != "kafka.tls.insecure_skip_verify" || !strings.Contains(got[0].Risk, "PLAIN password") {
		t.Errorf("insecure_skip_verify with PLAIN: %v", got)
	}
	k.TLS = config.TLS{}
	if got := InsecureSettings(k); len(got) != 1 || got[0].Setting != "kafka.sasl.mechanism" {
		t.Errorf("PLAIN without TLS: %v", got)
	}

	var buf bytes.Buffer
	log := zerolog.New(&buf)
	warnInsecure(k, log)
	warnInsecure(k, log)
	if n := strings.Count(buf.String(), "INSECURE"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), `"level":"warn"`) || strings.Contains(buf.String(), `"p"`) {
		t.Errorf("warning: %s", buf.String())
	}
}
