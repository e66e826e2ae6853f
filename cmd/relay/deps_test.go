package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The production binary must not link test tooling: the embedded broker and
// the Postgres launcher only belong in the dev mode's build.
func TestProductionBinaryLinksNoTestTooling(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "kfake") || strings.HasSuffix(dep, "/internal/devenv") || dep == "testing" {
			t.Errorf("cmd/relay links %s", dep)
		}
	}
}
