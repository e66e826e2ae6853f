package main

import (
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relay-dev/relay/internal/testutil"
)

// TestHelperRelay is the relay's main when the test binary is re-executed by
// relayCmd; on its own it does nothing.
func TestHelperRelay(t *testing.T) {
	if os.Getenv("RELAY_TEST_HELPER") != "1" {
		t.Skip("helper process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// relayCmd runs the relay's command line in a child process, as an operator
// would, without building a separate binary.
func relayCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperRelay$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "RELAY_TEST_HELPER=1")
	return cmd
}

const secret = "hunter2-secret"

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func assertNoSecret(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range []string{secret, url.QueryEscape(secret), "hunter2"} {
		if strings.Contains(out, s) {
			t.Errorf("%s contains the password (%q):\n%s", what, s, out)
		}
	}
}

// TestPasswordNeverLogged runs the relay against an unreachable Postgres whose
// URL carries a password, in both log formats, and as `relay check` and
// `relay status`: the password must not appear anywhere in what they print.
func TestPasswordNeverLogged(t *testing.T) {
	pgAddr := closedPort(t)
	host, port, _ := net.SplitHostPort(pgAddr)
	// postgres.url in both forms pgx accepts: a URL, and a key=value DSN
	// with the password quoted.
	forms := []struct{ name, url, redacted string }{
		{"", "postgres://relay:" + secret + "@" + pgAddr + "/app?sslmode=disable&connect_timeout=2", "relay:xxxxx@"},
		{"dsn/", "host=" + host + " port=" + port + " user=relay password='" + secret + "' dbname=app sslmode=disable connect_timeout=2", "password=xxxxx"},
	}
	for _, form := range forms {
		testPasswordNeverLogged(t, form.name, form.url, form.redacted)
	}
}

func testPasswordNeverLogged(t *testing.T, name, pgURL, redacted string) {
	cfgYAML := "postgres:\n  url: \"" + pgURL + "\"\n" +
		"kafka:\n  brokers: [\"" + closedPort(t) + "\"]\npipeline:\n  max_backoff: 200ms\nlog:\n  level: debug\n  format: %s\n"
	for _, format := range []string{"json", "console"} {
		t.Run(name+"run/"+format, func(t *testing.T) {
			path := writeConfig(t, strings.Replace(cfgYAML, "%s", format, 1))
			cmd := relayCmd(t, "run", "--config", path)
			out := &testutil.Buffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			defer func() { _ = cmd.Process.Kill(); <-done }()
			// Several attempts' worth of connection errors, then a clean stop.
			deadline := time.Now().Add(20 * time.Second)
			for strings.Count(out.String(), "connecting to postgres") < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("no repeated connection errors within 20s:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("relay did not stop on SIGTERM")
			}
			if !strings.Contains(out.String(), redacted) {
				t.Errorf("expected the redacted URL in the output:\n%s", out.String())
			}
			assertNoSecret(t, "relay run output", out.String())
		})
	}
	for _, sub := range []string{"check", "status"} {
		t.Run(name+sub, func(t *testing.T) {
			path := writeConfig(t, strings.Replace(cfgYAML, "%s", "json", 1))
			out, err := relayCmd(t, sub, "--config", path).CombinedOutput()
			if err == nil {
				t.Errorf("relay %s succeeded against an unreachable Postgres:\n%s", sub, out)
			}
			assertNoSecret(t, "relay "+sub+" output", string(out))
		})
	}
	t.Run(name+"invalid-config", func(t *testing.T) {
		// A config error must not echo the URL's password either.
		bad := strings.Replace(pgURL, "sslmode=disable", "sslmode=bogus", 1)
		path := writeConfig(t, "postgres:\n  url: \""+bad+"\"\nkafka:\n  brokers: [nohostport]\n")
		out, err := relayCmd(t, "check", "--config", path).CombinedOutput()
		if err == nil {
			t.Fatalf("relay check accepted an invalid config:\n%s", out)
		}
		if !strings.Contains(string(out), "✗ kafka.brokers[0]: ") || !strings.Contains(string(out), "✗ postgres.url: ") {
			t.Errorf("each problem should be a ✗ line naming its key:\n%s", out)
		}
		assertNoSecret(t, "relay check output", string(out))
		out, _ = relayCmd(t, "run", "--config", path).CombinedOutput()
		assertNoSecret(t, "relay run output", string(out))
	})
}
