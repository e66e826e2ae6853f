package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientConfig returns the TLS configuration for the brokers. It reads
// ca_file and the client key pair each time, so a producer rebuilt after a
// certificate rotation picks up the new files; Validate calls it at load so
// that a bad file is reported there, naming its key. Errors are joined, one
// per key.
func (t TLS) ClientConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	var errs []error
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kafka.tls.ca_file: %w", err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("kafka.tls.ca_file: %s holds no PEM certificate", t.CAFile))
			}
			tc.RootCAs = pool
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("kafka.tls.cert_file/key_file: %w", err))
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return tc, nil
}
