package sink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/relay-dev/relay/pkg/config"
)

// warnOnce keeps the security warnings to one each per process: the producer
// is rebuilt on every pipeline restart, and repeating them would bury them.
var warnOnce sync.Once

// warnInsecure logs, once per process, the Kafka settings that weaken
// security without stopping the relay: they are legitimate in a lab, and an
// operator must be able to spot them in production logs.
func warnInsecure(k config.Kafka, log zerolog.Logger) {
	warnOnce.Do(func() {
		for _, w := range InsecureSettings(k) {
			log.Warn().Str("setting", w.Setting).Msg(w.Risk)
		}
	})
}

// Insecurity is one configured weakness and what it exposes.
type Insecurity struct {
	Setting string
	Risk    string
}

// InsecureSettings lists the weaknesses of k, for the log and `relay check`.
func InsecureSettings(k config.Kafka) []Insecurity {
	var out []Insecurity
	if k.TLS.Enabled && k.TLS.InsecureSkipVerify {
		out = append(out, Insecurity{"kafka.tls.insecure_skip_verify",
			"INSECURE: kafka.tls.insecure_skip_verify is true, so the brokers' certificates are NOT verified: anyone on the network path can pose as a broker and read or drop every event" +
				saslExposure(k) + "; set kafka.tls.ca_file to the brokers' CA instead"})
	}
	if k.SASL.Mechanism == config.SASLPlain && !k.TLS.Enabled {
		out = append(out, Insecurity{"kafka.sasl.mechanism",
			"INSECURE: SASL PLAIN without TLS sends the Kafka password in clear text on every connection; enable kafka.tls or use SCRAM-SHA-512"})
	}
	return out
}

func saslExposure(k config.Kafka) string {
	if k.SASL.Mechanism == config.SASLPlain {
		return ", and capture the SASL PLAIN password"
	}
	return ""
}

// describeTLSError adds what to change to the common TLS failures, which Go
// reports in terms of certificates rather than of the relay's settings.
func describeTLSError(t config.TLS, err error) string {
	msg := err.Error()
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownCA) && t.CAFile != "":
		return msg + " (the broker's certificate is not signed by a CA in kafka.tls.ca_file " + t.CAFile + ")"
	case errors.As(err, &unknownCA):
		return msg + " (the broker's certificate is not signed by a system CA: set kafka.tls.ca_file to the CA that signed it)"
	case errors.As(err, &hostname):
		return msg + " (set kafka.tls.server_name to a name the broker's certificate carries, or connect by that name)"
	case errors.As(err, &invalid):
		return msg + " (the broker's certificate is expired or not valid for TLS servers)"
	case errors.As(err, &record):
		return msg + " (the broker does not speak TLS on this port: check kafka.brokers or kafka.tls.enabled)"
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "remote error: tls: bad certificate") ||
		strings.Contains(msg, "remote error: tls: unknown certificate authority"):
		if t.CertFile == "" {
			return msg + " (the broker wants a client certificate: set kafka.tls.cert_file and kafka.tls.key_file)"
		}
		return msg + " (the broker refused the client certificate in kafka.tls.cert_file)"
	}
	return msg
}
