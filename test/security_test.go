package test

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"hash"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/relay-dev/relay/internal/devenv"
	"github.com/relay-dev/relay/internal/devenv/devenvtest"
)

// ---------------------------------------------------------------------------
// A throwaway PKI. Files go in a directory the postgres user can enter,
// because devenv runs the server as that user when the tests run as root.

type pki struct {
	t    *testing.T
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	CA   string // CA certificate file
	pool *x509.CertPool
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	dir, err := os.MkdirTemp("", "relay-pki-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: dir, ca: ca, key: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.CA = p.write(name+"-ca.crt", pemBlock("CERTIFICATE", der), 0o644, false)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// write stores a file; forServer hands it to the postgres user, which must
// own a server key (and the key must be 0600).
func (p *pki) write(name string, data []byte, mode os.FileMode, forServer bool) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, mode); err != nil {
		p.t.Fatal(err)
	}
	if forServer && os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			p.t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(path, uid, gid); err != nil {
			p.t.Fatal(err)
		}
	}
	return path
}

// leaf issues a certificate: a server one for 127.0.0.1 and the DNS names, or
// a client one for cn.
type leaf struct {
	Cert, Key string
	TLS       tls.Certificate
}

func (p *pki) issue(cn string, client, forServer bool, dns ...string) leaf {
	p.t.Helper()
	key := newKey(p.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.DNSNames, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return leaf{
		Cert: p.write(cn+".crt", pemBlock("CERTIFICATE", der), 0o644, forServer),
		Key:  p.write(cn+".key", pemBlock("PRIVATE KEY", keyDER), 0o600, forServer),
		TLS:  tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}
}

// ---------------------------------------------------------------------------
// Kafka users, and a broker that refuses logins the way Kafka does.

type kafkaUser struct {
	mech, name, pass string
	salt, salted     []byte // SCRAM only
}

func (u kafkaUser) hash() func() hash.Hash {
	if u.mech == "SCRAM-SHA-512" {
		return sha512.New
	}
	return sha256.New
}

// kafkaLikeLogins gives kfake Kafka's answer to a refused login. kfake closes
// the connection instead, which a client cannot tell from a network failure;
// Kafka (since 1.0, KIP-152) answers SaslAuthenticate with error 58 and a
// message, and that answer is what the relay must treat as final. Successful
// logins are left to kfake, which checks them on its own. SCRAM users are
// created through AlterUserScramCredentials with a salt we choose, so that a
// proof can be checked here. It returns a count of refused logins per user.
func kafkaLikeLogins(t *testing.T, c *kfake.Cluster, admin *kgo.Client, users []kafkaUser) func(user string) int {
	t.Helper()
	byName := map[string]kafkaUser{}
	req := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
	for _, u := range users {
		if u.mech != "PLAIN" {
			u.salt = make([]byte, 16)
			rand.Read(u.salt)
			var err error
			if u.salted, err = pbkdf2.Key(u.hash(), u.pass, u.salt, 4096, u.hash()().Size()); err != nil {
				t.Fatal(err)
			}
			up := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
			up.Name, up.Iterations, up.Salt, up.SaltedPassword = u.name, 4096, u.salt, u.salted
			up.Mechanism = 1
			if u.mech == "SCRAM-SHA-512" {
				up.Mechanism = 2
			}
			req.Upsertions = append(req.Upsertions, up)
		}
		byName[u.name] = u
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatalf("creating SCRAM user %s: %v", r.User, err)
		}
	}

	var mu sync.Mutex
	firsts := map[string][2]string{} // client nonce -> user, client-first-message-bare
	refused := map[string]int{}
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		r := kreq.(*kmsg.SASLAuthenticateRequest)
		msg := string(r.SASLAuthBytes)
		refuse := func(user, mech string) (kmsg.Response, error, bool) {
			refused[user]++
			resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			m := "Authentication failed during authentication due to invalid credentials with SASL mechanism " + mech
			resp.ErrorMessage = &m
			return resp, nil, true
		}
		attr := func(s, k string) string {
			for _, kv := range strings.Split(s, ",") {
				if v, ok := strings.CutPrefix(kv, k+"="); ok {
					return v
				}
			}
			return ""
		}
		switch {
		case strings.HasPrefix(msg, "n,"): // SCRAM client-first
			_, rest, _ := strings.Cut(msg[2:], ",")
			name := attr(rest, "n")
			if _, ok := byName[name]; !ok {
				return refuse(name, "SCRAM")
			}
			firsts[attr(rest, "r")] = [2]string{name, rest}
		case strings.HasPrefix(msg, "c="): // SCRAM client-final
			nonce, proof64 := attr(msg, "r"), attr(msg, "p")
			for cn, first := range firsts {
				if !strings.HasPrefix(nonce, cn) {
					continue
				}
				delete(firsts, cn)
				u := byName[first[0]]
				serverFirst := "r=" + nonce + ",s=" + base64.StdEncoding.EncodeToString(u.salt) + ",i=4096"
				without := msg[:strings.LastIndex(msg, ",p=")]
				mac := func(key []byte, s string) []byte { m := hmac.New(u.hash(), key); m.Write([]byte(s)); return m.Sum(nil) }
				clientKey := mac(u.salted, "Client Key")
				h := u.hash()()
				h.Write(clientKey)
				want := mac(h.Sum(nil), first[1]+","+serverFirst+","+without)
				for i := range want {
					want[i] ^= clientKey[i]
				}
				if got, _ := base64.StdEncoding.DecodeString(proof64); !hmac.Equal(got, want) {
					return refuse(u.name, u.mech)
				}
			}
		default: // PLAIN: authzid NUL user NUL password
			parts := strings.SplitN(msg, "\x00", 3)
			if len(parts) == 3 {
				if u, ok := byName[parts[1]]; !ok || u.mech != "PLAIN" || u.pass != parts[2] {
					return refuse(parts[1], "PLAIN")
				}
			}
		}
		return nil, nil, false
	})
	return func(user string) int {
		mu.Lock()
		defer mu.Unlock()
		return refused[user]
	}
}

// secureReader returns franz-go options for reading from the secured broker.
func secureReader(p *pki, client leaf, adminPass string) []kgo.Opt {
	return []kgo.Opt{
		kgo.DialTLSConfig(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{client.TLS}, MinVersion: tls.VersionTLS12}),
		kgo.SASL(plain.Auth{User: "admin", Pass: adminPass}.AsMechanism()),
	}
}

// readRecords reads topics from the start until every committed event's id
// has arrived (duplicates may come too).
func readRecords(t *testing.T, addr string, opts []kgo.Opt, committed []event, topics ...string) []devenv.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(addr), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	missing := map[string]bool{}
	for _, ev := range committed {
		missing[ev.ID] = true
	}
	var recs []devenv.Record
	for len(missing) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d events not in %v before the deadline", len(missing), len(committed), topics)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			rec := devenv.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: map[string]string{}}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = string(h.Value)
			}
			recs = append(recs, rec)
			delete(missing, rec.Headers["id"])
		})
	}
	return recs
}

// noSecrets fails if any secret appears in any of the outputs.
func noSecrets(t *testing.T, secrets []string, outputs map[string]string) {
	t.Helper()
	for what, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s prints the secret %q:\n%s", what, s, tail(out, 20))
			}
		}
	}
}

func writeSecret(t *testing.T, value string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------

// TestSecurityKafkaTLSSASL runs the relay against a broker that demands TLS
// with a client certificate (mTLS) and SASL, with each mechanism and each
// way of passing the password, checks every event arrives, then checks that a
// wrong password stops `relay run` and fails `relay check` after one login
// attempt, naming mechanism and user, and that no output shows a password.
func TestSecurityKafkaTLSSASL(t *testing.T) {
	p := newPKI(t, "kafka")
	client := p.issue("relay-client", true, false)
	const (
		adminPass = "admin-Secret-4f1c"
		pass512   = "scram512-Secret-9a7e"
		pass256   = "scram256-Secret-31d0"
		passPlain = "plain-Secret-c2b8"
		wrongPass = "wrong-Secret-5e66"
	)
	secrets := []string{adminPass, pass512, pass256, passPlain, wrongPass}
	e := &env{t: t, db: "app", parts: 3}
	e.pg = devenvtest.Postgres(t, devenv.PostgresOptions{})
	e.kafka = devenvtest.Kafka(t, devenv.KafkaOptions{Partitions: int(e.parts), Extra: []kfake.Opt{
		kfake.TLS(&tls.Config{
			Certificates: []tls.Certificate{p.issue("kafka", false, false, "kafka.internal").TLS},
			ClientCAs:    p.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		}),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "admin", adminPass),
		kfake.Superuser("PLAIN", "relayplain", passPlain),
	}})
	e.exec("CREATE DATABASE app", "postgres")
	e.exec(devenv.OutboxDDL("public.outbox"), e.db)
	reader := secureReader(p, client, adminPass)
	admin, err := kgo.NewClient(append(reader, kgo.SeedBrokers(e.kafka.Addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	refused := kafkaLikeLogins(t, e.kafka.Cluster(), admin, []kafkaUser{
		{mech: "PLAIN", name: "admin", pass: adminPass},
		{mech: "PLAIN", name: "relayplain", pass: passPlain},
		{mech: "SCRAM-SHA-512", name: "relay512", pass: pass512},
		{mech: "SCRAM-SHA-256", name: "relay256", pass: pass256},
	})

	kafkaYAML := func(mech, user, passLine, tlsExtra string) string {
		return fmt.Sprintf(`postgres:
  url: %s
kafka:
  brokers: ["%s"]
  tls:
    enabled: true
    ca_file: %s
    cert_file: %s
    key_file: %s
%s  sasl:
    mechanism: %s
    username: %s
%spipeline:
  status_interval: 200ms
  max_backoff: 2s
log:
  level: debug
`, e.url(), e.kafka.Addr(), p.CA, client.Cert, client.Key, tlsExtra, mech, user, passLine)
	}
	outputs := map[string]string{}
	prod := newProducer()
	conn := e.connect()
	ctx := context.Background()

	runs := []struct {
		name, mech, user, passLine, tlsExtra string
		env                                  []string
	}{
		// The password from the environment, and the broker reached by a
		// name its certificate carries rather than by its address.
		{"scram-sha-512-env", "SCRAM-SHA-512", "relay512", "", "    server_name: kafka.internal\n",
			[]string{"RELAY_KAFKA_SASL_PASSWORD=" + pass512}},
		{"plain-password-file", "PLAIN", "relayplain", "    password_file: " + writeSecret(t, passPlain) + "\n", "", nil},
		{"scram-sha-256-expanded", "SCRAM-SHA-256", "relay256", "    password: ${TEST_KAFKA_PW}\n", "",
			[]string{"TEST_KAFKA_PW=" + pass256}},
	}
	for i, run := range runs {
		t.Run(run.name, func(t *testing.T) {
			cfg := kafkaYAML(run.mech, run.user, run.passLine, run.tlsExtra)
			addr := freeAddr(t)
			r := e.startRelay(cfg+fmt.Sprintf("http:\n  listen: %q\n", addr), run.env...)
			e.waitStreaming("outbox_relay")
			if err := prod.insert(ctx, conn, "public.outbox", 30, keyed(12, i)); err != nil {
				t.Fatal(err)
			}
			committed := prod.committed()
			recs := readRecords(t, e.kafka.Addr(), reader, committed, allTopics("outbox.event.")...)
			if v := check(committed, sortRecords(recs), e.parts, defaultTopic); v.lost > 0 || v.misplaced > 0 || v.orderViolations > 0 {
				t.Fatalf("%s: %v", v, v.problems)
			}
			_, metrics, err := httpGet("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if code := r.stop(30 * time.Second); code != 0 {
				t.Fatalf("relay exited %d after SIGTERM", code)
			}
			outputs["relay run "+run.name] = r.out.String()
			outputs["/metrics "+run.name] = metrics
		})
	}

	t.Run("check-ok", func(t *testing.T) {
		out, code := runRelay(t, kafkaYAML("SCRAM-SHA-512", "relay512", "    password_file: "+writeSecret(t, pass512)+"\n", ""), "check")
		outputs["relay check ok"] = out
		if code != 0 || !strings.Contains(out, "✓ kafka: connected") {
			t.Errorf("relay check exited %d:\n%s", code, out)
		}
	})

	for _, mech := range []string{"SCRAM-SHA-512", "PLAIN"} {
		user := map[string]string{"SCRAM-SHA-512": "relay512", "PLAIN": "relayplain"}[mech]
		t.Run("wrong-password-"+mech, func(t *testing.T) {
			before := refused(user)
			cfg := kafkaYAML(mech, user, "    password_file: "+writeSecret(t, wrongPass)+"\n", "")
			r := e.startRelay(cfg)
			code, out := r.wait(30 * time.Second)
			outputs["relay run wrong "+mech] = out
			last := lastLine(out)
			if code == 0 {
				t.Fatalf("relay exited 0 with a wrong password:\n%s", tail(out, 10))
			}
			for _, want := range []string{"relay: kafka rejected SASL " + mech + " authentication for user \"" + user + "\"", "invalid credentials"} {
				if !strings.Contains(last, want) {
					t.Errorf("last line lacks %q: %s", want, last)
				}
			}
			// One login from the relay; no retry can fix a password.
			if n := refused(user) - before; n != 1 {
				t.Errorf("%d refused logins, want 1", n)
			}

			out, code = runRelay(t, cfg, "check")
			outputs["relay check wrong "+mech] = out
			bad := strings.Join(failedLines(out), "\n")
			if code != 1 || !strings.Contains(bad, "✗ kafka: kafka rejected SASL "+mech+" authentication for user \""+user+"\"") {
				t.Errorf("relay check exited %d:\n%s", code, out)
			}
		})
	}

	t.Run("tls-problems", func(t *testing.T) {
		other := newPKI(t, "other")
		good := kafkaYAML("SCRAM-SHA-512", "relay512", "    password_file: "+writeSecret(t, pass512)+"\n", "")
		cases := []struct{ name, cfg, want string }{
			{"untrusted-ca", strings.Replace(good, "ca_file: "+p.CA, "ca_file: "+other.CA, 1),
				"not signed by a CA in kafka.tls.ca_file"},
			{"no-client-cert", strings.Replace(strings.Replace(good, "    cert_file: "+client.Cert+"\n", "", 1), "    key_file: "+client.Key+"\n", "", 1),
				"set kafka.tls.cert_file and kafka.tls.key_file"},
			{"plaintext", strings.Replace(good, "enabled: true", "enabled: false", 1),
				"kafka.tls.enabled: is false but other kafka.tls keys are set"},
		}
		for _, c := range cases {
			out, code := runRelay(t, c.cfg, "check")
			outputs["relay check "+c.name] = out
			if code != 1 || !strings.Contains(strings.Join(failedLines(out), "\n"), c.want) {
				t.Errorf("%s: relay check exited %d, want a ✗ line with %q:\n%s", c.name, code, c.want, out)
			}
		}
		insecure := strings.Replace(good, "ca_file: "+p.CA, "insecure_skip_verify: true", 1)
		out, code := runRelay(t, insecure, "check")
		outputs["relay check insecure"] = out
		if code != 0 || !strings.Contains(out, "! kafka.tls.insecure_skip_verify: INSECURE") {
			t.Errorf("insecure_skip_verify: relay check exited %d, want 0 with a ! line:\n%s", code, out)
		}
	})

	noSecrets(t, secrets, outputs)
}

// pgTLSEnv starts a Postgres that refuses unencrypted connections from
// everyone but the test's own superuser, authenticates roles by password
// (scram-sha-256) over TLS, and relaycert by client certificate.
func pgTLSEnv(t *testing.T, p *pki) *env {
	t.Helper()
	server := p.issue("localhost", false, true, "localhost")
	e := &env{t: t, db: "app", parts: 3}
	e.pg = devenvtest.Postgres(t, devenv.PostgresOptions{
		Settings: map[string]string{"ssl": "on", "ssl_cert_file": server.Cert, "ssl_key_file": server.Key, "ssl_ca_file": p.CA},
		// A logical replication connection matches the database column
		// like any other, not the "replication" keyword.
		HBA: []string{
			"hostnossl all postgres 127.0.0.1/32 trust",
			"hostnossl all all 127.0.0.1/32 reject",
			"hostssl all relaycert 127.0.0.1/32 cert",
			"hostssl all all 127.0.0.1/32 scram-sha-256",
		},
	})
	e.kafka = devenvtest.Kafka(t, devenv.KafkaOptions{Partitions: int(e.parts)})
	e.exec("CREATE DATABASE app", "postgres")
	return e
}

// TestSecurityPostgresTLSLeastPrivilege runs the relay as a role with only
// LOGIN and REPLICATION (not even SELECT on the outbox: logical decoding
// checks no table privilege; snapshot.mode never, since the initial snapshot
// does read the table), against a publication the table's owner
// created, over TLS verified against our CA (sslmode
// verify-full) on both the regular and the replication connection; then by
// client certificate; and checks that sslmode=disable is refused with a clear
// error.
func TestSecurityPostgresTLSLeastPrivilege(t *testing.T) {
	const pgPass = "pg-Secret-7b2d"
	p := newPKI(t, "postgres")
	e := pgTLSEnv(t, p)
	e.exec(`CREATE ROLE app_owner NOLOGIN;
		GRANT CREATE ON DATABASE app TO app_owner;
		CREATE ROLE relay LOGIN REPLICATION PASSWORD '`+pgPass+`';
		CREATE ROLE relaycert LOGIN REPLICATION`, "postgres")
	e.exec(devenv.OutboxDDL("public.outbox")+`;
		ALTER TABLE public.outbox OWNER TO app_owner;
		SET ROLE app_owner;
		CREATE PUBLICATION outbox_relay FOR TABLE public.outbox WITH (publish = 'insert');
		RESET ROLE`, e.db)

	pgURL := func(user, query string) string {
		return fmt.Sprintf("postgres://%s@localhost:%d/app?%s", user, e.pg.Port(), query)
	}
	verifyFull := "sslmode=verify-full&sslrootcert=" + p.CA
	cfg := func(url, slot, extra string) string {
		return fmt.Sprintf(`postgres:
  url: %s
  slot: %s
  create_publication: false
%skafka:
  brokers: ["%s"]
snapshot:
  mode: never                 # the initial snapshot reads the table, which this role may not
pipeline:
  status_interval: 200ms
  max_backoff: 2s
log:
  level: debug
`, url, slot, extra, e.kafka.Addr())
	}
	passwordFile := "  password_file: " + writeSecret(t, pgPass) + "\n"
	outputs := map[string]string{}
	prod := newProducer()
	conn := e.connect()
	ctx := context.Background()

	// usesTLS reports whether every connection of role is encrypted, and
	// how many there are (the walsender among them).
	usesTLS := func(role string) (all bool, n int, dn string) {
		err := e.scan(`SELECT coalesce(bool_and(s.ssl), false), count(*), coalesce(max(s.client_dn), '')
			FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1`, []any{role}, &all, &n, &dn)
		if err != nil {
			t.Fatal(err)
		}
		return all, n, dn
	}
	deliver := func(t *testing.T, n, salt int) {
		t.Helper()
		if err := prod.insert(ctx, conn, "public.outbox", n, keyed(8, salt)); err != nil {
			t.Fatal(err)
		}
		committed := prod.committed()
		e.waitDelivered(len(committed), 60*time.Second, allTopics("outbox.event.")...)
		if v := check(committed, e.readAll(allTopics("outbox.event.")...), e.parts, defaultTopic); v.lost > 0 || v.misplaced > 0 {
			t.Fatalf("%s: %v", v, v.problems)
		}
	}

	t.Run("verify-full-least-privilege", func(t *testing.T) {
		// channel_binding=require binds the SCRAM login to this TLS
		// session, so a man in the middle cannot forward it.
		c := cfg(pgURL("relay", verifyFull+"&channel_binding=require"), "outbox_relay", passwordFile)
		out, code := runRelay(t, c, "check")
		outputs["relay check"] = out
		if code != 0 {
			t.Fatalf("relay check exited %d for the least-privilege role:\n%s", code, out)
		}
		r := e.startRelay(c)
		e.waitStreaming("outbox_relay")
		deliver(t, 25, 1)
		var walsenderTLS bool
		var walsenders int
		if err := e.scan(`SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
			WHERE r.usename = 'relay'`, nil, &walsenderTLS, &walsenders); err != nil || walsenders != 1 || !walsenderTLS {
			t.Errorf("%d replication connection(s), encrypted %t (%v)", walsenders, walsenderTLS, err)
		}
		if all, n, _ := usesTLS("relay"); !all || n == 0 {
			t.Errorf("relay's %d connection(s): all encrypted = %t", n, all)
		}
		var super, sel bool
		if err := e.scan("SELECT rolsuper, has_table_privilege('relay', 'public.outbox', 'SELECT') FROM pg_roles WHERE rolname = 'relay'",
			nil, &super, &sel); err != nil || super || sel {
			t.Fatalf("relay role: superuser %t, SELECT on the outbox %t (%v)", super, sel, err)
		}
		if code := r.stop(30 * time.Second); code != 0 {
			t.Fatalf("relay exited %d after SIGTERM", code)
		}
		outputs["relay run verify-full"] = r.out.String()
	})

	t.Run("client-certificate", func(t *testing.T) {
		cc := p.issue("relaycert", true, false)
		c := cfg(pgURL("relaycert", verifyFull+"&sslcert="+cc.Cert+"&sslkey="+cc.Key), "outbox_relay_cert", "")
		r := e.startRelay(c)
		e.waitStreaming("outbox_relay_cert")
		deliver(t, 10, 2)
		if all, n, dn := usesTLS("relaycert"); !all || n == 0 || !strings.Contains(dn, "relaycert") {
			t.Errorf("relaycert's %d connection(s): all encrypted = %t, client DN %q", n, all, dn)
		}
		if code := r.stop(30 * time.Second); code != 0 {
			t.Fatalf("relay exited %d after SIGTERM", code)
		}
	})

	t.Run("sslmode-disable-refused", func(t *testing.T) {
		c := cfg(pgURL("relay", "sslmode=disable"), "outbox_relay", passwordFile)
		r := e.startRelay(c)
		code, out := r.wait(30 * time.Second)
		outputs["relay run sslmode=disable"] = out
		if last := lastLine(out); code == 0 || !strings.Contains(last, "no encryption") {
			t.Errorf("relay exited %d; last line: %s", code, last)
		}
		out, code = runRelay(t, c, "check")
		outputs["relay check sslmode=disable"] = out
		if code != 1 || !strings.Contains(strings.Join(failedLines(out), "\n"), "no encryption") {
			t.Errorf("relay check exited %d:\n%s", code, out)
		}
	})

	noSecrets(t, []string{pgPass}, outputs)
}

// TestSecurityHostileIdentifiers relays from a table and through a
// publication whose names are SQL injection attempts: every statement the
// relay builds must quote them, so the events flow and the table the names
// try to drop survives.
func TestSecurityHostileIdentifiers(t *testing.T) {
	e := newEnv(t, envOpts{})
	const (
		table = `public."evil; drop table x"`
		pub   = `Evil'Pub"; DROP TABLE x; --`
	)
	e.exec(`CREATE TABLE public.x (v int); INSERT INTO public.x VALUES (42)`, e.db)
	e.exec(devenv.OutboxDDL(table), e.db)
	cfg := e.secConfig(fmt.Sprintf("  publication: %q\n", pub), "", fmt.Sprintf("outbox:\n  - table: %q\n", table))

	out, code := runRelay(t, cfg, "check")
	if code != 0 {
		t.Fatalf("relay check exited %d:\n%s", code, out)
	}
	r := e.startRelay(cfg)
	e.waitStreaming("outbox_relay")
	p := newProducer()
	if err := p.insert(context.Background(), e.connect(), table, 20, keyed(5, 3)); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(20, 60*time.Second, allTopics("outbox.event.")...)
	if v := check(p.committed(), e.readAll(allTopics("outbox.event.")...), e.parts, defaultTopic); v.lost > 0 || v.misplaced > 0 {
		t.Fatalf("%s: %v", v, v.problems)
	}
	var x, pubs, inPub int
	if err := e.scan("SELECT v FROM public.x", nil, &x); err != nil || x != 42 {
		t.Errorf("table x: %d, %v", x, err)
	}
	if err := e.scan(`SELECT (SELECT count(*) FROM pg_publication WHERE pubname = $1),
		(SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'evil; drop table x')`, []any{pub}, &pubs, &inPub); err != nil || pubs != 1 || inPub != 1 {
		t.Errorf("publication %q: %d found, holding the table %d times (%v)", pub, pubs, inPub, err)
	}
	r.stop(30 * time.Second)

	// An unquoted name that would need quotes is refused before any SQL.
	out, code = runRelay(t, e.config("outbox:\n  - table: public.outbox; drop table x\n"), "check")
	if code != 1 || !strings.Contains(out, "has characters that need double quotes") {
		t.Errorf("unquoted hostile table name: relay check exited %d:\n%s", code, out)
	}
}

// TestSecurityOversizedEvents writes an event larger than
// kafka.max_message_bytes. With the default (on_unpublishable: stop) the
// relay exits non-zero naming the event and does not confirm past it;
// restarted with the deprecated oversized: dead_letter on the same slot it
// routes that event, and a later one, to the dead letter topic and carries
// on.
func TestSecurityOversizedEvents(t *testing.T) {
	e := newEnv(t, envOpts{})
	conn := e.connect()
	ctx := context.Background()
	insert := func(key string, payloadBytes int) string {
		t.Helper()
		var id string
		payload := fmt.Sprintf(`{"pad": %q}`, strings.Repeat("p", payloadBytes))
		err := conn.QueryRow(ctx, `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload)
			VALUES ('Order', $1, 'OrderCreated', $2) RETURNING id::text`, key, payload).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	const limit = 4096
	topic := "outbox.event.Order"

	r := e.startRelay(e.secConfig("", fmt.Sprintf("  max_message_bytes: %d\n", limit), ""))
	e.waitStreaming("outbox_relay")
	small1 := insert("o-1", 10)
	big1 := insert("o-2", 3*limit)
	small2 := insert("o-3", 10)
	code, out := r.wait(60 * time.Second)
	last := lastLine(out)
	if code == 0 {
		t.Fatalf("relay exited 0 on an oversized event:\n%s", tail(out, 10))
	}
	for _, want := range []string{"event " + big1 + " of public.outbox", "kafka.max_message_bytes (4096)", "kafka.on_unpublishable is stop"} {
		if !strings.Contains(last, want) {
			t.Errorf("last line lacks %q: %s", want, last)
		}
	}
	recs := e.readAll(topic)
	if len(recs) != 1 || recs[0].Headers["id"] != small1 {
		t.Fatalf("with oversized: stop Kafka holds %d records, want only the event before the big one", len(recs))
	}

	addr := freeAddr(t)
	r = e.startRelay(e.secConfig("", fmt.Sprintf("  max_message_bytes: %d\n  oversized: dead_letter\n  dead_letter_topic: relay.dead-letter\n", limit),
		fmt.Sprintf("http:\n  listen: %q\n", addr)))
	e.waitStreaming("outbox_relay")
	big2 := insert("o-4", 2*limit)
	small3 := insert("o-5", 10)
	// A restart may re-send small1; what matters is that nothing is missing.
	waitFor(t, 60*time.Second, "the small events in "+topic, func() bool {
		ids := map[string]bool{}
		recs, err := devenv.ReadAll(ctx, e.kafka.Addr(), topic)
		for _, rec := range recs {
			ids[rec.Headers["id"]] = true
		}
		return err == nil && ids[small1] && ids[small2] && ids[small3]
	})
	e.waitDelivered(2, 60*time.Second, "relay.dead-letter")
	if !strings.Contains(r.out.String(), "kafka.oversized is deprecated: rename it to kafka.on_unpublishable") {
		t.Error("no deprecation warning for kafka.oversized")
	}
	dead := map[string]devenv.Record{}
	for _, d := range e.readAll("relay.dead-letter") {
		dead[d.Headers["id"]] = d
	}
	if len(dead) != 2 {
		t.Errorf("%d dead letter records, want 2", len(dead))
	}
	for _, want := range []struct{ id, key string }{{big1, "o-2"}, {big2, "o-4"}} {
		d, ok := dead[want.id]
		if !ok || string(d.Key) != want.key || d.Value != nil || d.Headers["table"] != "public.outbox" ||
			d.Headers["original-topic"] != topic || d.Headers["type"] != "OrderCreated" || !strings.Contains(d.Headers["error"], "exceeds kafka.max_message_bytes 4096") {
			t.Errorf("dead letter record for %s: found %t, key %q, value %d bytes, headers %v; want key %s", want.id, ok, d.Key, len(d.Value), d.Headers, want.key)
		}
	}
	waitFor(t, 30*time.Second, "relay_dead_letter_total to count both", func() bool {
		m, err := scrapeMetrics(addr)
		return err == nil && m["relay_dead_letter_total"] == 2
	})
	_, body, _ := httpGet("http://" + addr + "/metrics")
	if !strings.Contains(body, `relay_dead_letter_total{table="public.outbox"} 2`) {
		t.Errorf("metrics lack relay_dead_letter_total{table=\"public.outbox\"} 2")
	}
	if code := r.stop(30 * time.Second); code != 0 {
		t.Errorf("relay exited %d after SIGTERM", code)
	}
}

// secConfig is env.config with room in the postgres and kafka sections.
func (e *env) secConfig(pgExtra, kafkaExtra, extra string) string {
	return fmt.Sprintf(`postgres:
  url: %s
%skafka:
  brokers: [%q]
%spipeline:
  status_interval: 200ms
  drain_timeout: 20s
  max_backoff: 2s
log:
  level: debug
%s`, e.url(), pgExtra, e.kafka.Addr(), kafkaExtra, extra)
}

// sortRecords orders records as devenv.ReadAll does, which check expects.
func sortRecords(recs []devenv.Record) []devenv.Record {
	slices.SortFunc(recs, func(a, b devenv.Record) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return recs
}
