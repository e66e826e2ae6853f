// Package deploy holds deployment artefacts; its tests check them without a
// container engine or a cluster, since neither exists where the tests run.
package deploy

import (
	"os"
	"strings"
	"testing"
)

// TestDockerfile checks the properties the image promises: a multi-stage build
// of a static binary, a distroless non-root runtime, the config where the
// docs say, and no HEALTHCHECK (Kubernetes probes are used instead).
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	var froms []string
	for _, line := range strings.Split(df, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "FROM") {
			froms = append(froms, f[1])
		}
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(line)), "HEALTHCHECK") {
			t.Error("Dockerfile declares a HEALTHCHECK; probes belong to the orchestrator")
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %v", froms)
	}
	for _, want := range []string{
		"CGO_ENABLED=0",                   // static binary
		"distroless/static",               // no libc, no shell
		"USER nonroot",                    // non-root
		"/etc/relay/relay.yaml",           // documented config path
		"RELAY_HTTP_LISTEN=:9090",         // probes reach the pod IP
		`"run", "--config", "/etc/relay/`, // default command
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
