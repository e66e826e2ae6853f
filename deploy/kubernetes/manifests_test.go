// Package kubernetes_test checks the example manifests against the relay
// itself: the embedded relay.yaml must load with config.Load, and the probes
// must hit the relay's health endpoints on the port it listens on.
package kubernetes_test

import (
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/relay-dev/relay/pkg/config"
)

// object is the subset of a Kubernetes object these checks read.
type object struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   metadata          `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       spec              `yaml:"spec"`
}

type metadata struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type spec struct {
	Replicas       *int          `yaml:"replicas"`
	MaxUnavailable any           `yaml:"maxUnavailable"`
	Selector       labelSelector `yaml:"selector"`
	Template       struct {
		Metadata metadata `yaml:"metadata"`
		Spec     podSpec  `yaml:"spec"`
	} `yaml:"template"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type podSpec struct {
	Containers      []container     `yaml:"containers"`
	Volumes         []volume        `yaml:"volumes"`
	SecurityContext securityContext `yaml:"securityContext"`
}

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Args            []string        `yaml:"args"`
	Env             []envVar        `yaml:"env"`
	Ports           []port          `yaml:"ports"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	SecurityContext securityContext `yaml:"securityContext"`
	Resources       struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type port struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type securityContext struct {
	RunAsNonRoot           *bool `yaml:"runAsNonRoot"`
	ReadOnlyRootFilesystem *bool `yaml:"readOnlyRootFilesystem"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name  string `yaml:"name"`
		Items []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
		Items      []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"secret"`
}

func load(t *testing.T, file string) []object {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var objs []object
	for i := 0; ; i++ {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name: %+v", file, i, o.Metadata)
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		t.Fatalf("%s has no documents", file)
	}
	return objs
}

func find(objs []object, kind, name string) *object {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Metadata.Name == name {
			return &objs[i]
		}
	}
	return nil
}

// workload is a Deployment or StatefulSet with its relay container.
type workload struct {
	obj   *object
	relay *container
}

func workloads(t *testing.T, objs []object) []workload {
	t.Helper()
	var ws []workload
	for i := range objs {
		o := &objs[i]
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		if !matches(o.Spec.Selector.MatchLabels, o.Spec.Template.Metadata.Labels) {
			t.Errorf("%s %s: selector %v does not match the pod labels %v", o.Kind, o.Metadata.Name, o.Spec.Selector.MatchLabels, o.Spec.Template.Metadata.Labels)
		}
		w := workload{obj: o}
		for j := range o.Spec.Template.Spec.Containers {
			c := &o.Spec.Template.Spec.Containers[j]
			if c.Image == "" || !strings.Contains(c.Image, ":") {
				t.Errorf("%s %s: container %s needs an image with a tag, got %q", o.Kind, o.Metadata.Name, c.Name, c.Image)
			}
			if c.Name == "relay" {
				w.relay = c
			}
		}
		if w.relay == nil {
			t.Fatalf("%s %s has no container named relay", o.Kind, o.Metadata.Name)
		}
		ws = append(ws, w)
	}
	if len(ws) == 0 {
		t.Fatal("no Deployment or StatefulSet")
	}
	return ws
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// relayConfig finds the relay.yaml the relay container reads: its --config
// path, the volume mounted there and the ConfigMap behind it.
func relayConfig(t *testing.T, objs []object, w workload) (yamlText string, cm *object) {
	t.Helper()
	path := ""
	for i, a := range w.relay.Args {
		if a == "--config" && i+1 < len(w.relay.Args) {
			path = w.relay.Args[i+1]
		}
	}
	if path == "" {
		t.Fatalf("relay container args %v have no --config", w.relay.Args)
	}
	for _, m := range w.relay.VolumeMounts {
		if filepath.Dir(path) != m.MountPath {
			continue
		}
		for _, v := range w.obj.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			key := filepath.Base(path)
			for _, it := range v.ConfigMap.Items {
				if it.Path == filepath.Base(path) {
					key = it.Key
				}
			}
			cm := find(objs, "ConfigMap", v.ConfigMap.Name)
			if cm == nil {
				t.Fatalf("ConfigMap %s (volume %s) is not in the file", v.ConfigMap.Name, v.Name)
			}
			text, ok := cm.Data[key]
			if !ok {
				t.Fatalf("ConfigMap %s has no key %s", cm.Metadata.Name, key)
			}
			return text, cm
		}
	}
	t.Fatalf("no ConfigMap volume is mounted at %s for --config %s", filepath.Dir(path), path)
	return "", nil
}

// loadRelayConfig loads the embedded relay.yaml as the relay would, with the
// Postgres URL from the environment and any password_file replaced by a
// stand-in file.
func loadRelayConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("relay.yaml: %v", err)
	}
	if pg, ok := doc["postgres"].(map[string]any); ok {
		if _, ok := pg["password_file"]; ok {
			pw := filepath.Join(t.TempDir(), "password")
			if err := os.WriteFile(pw, []byte("stand-in\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			pg["password_file"] = pw
		}
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RELAY_POSTGRES_URL", "postgres://relay@db.example:5432/app?sslmode=require")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the ConfigMap's relay.yaml does not load: %v", err)
	}
	return cfg
}

func probePort(t *testing.T, c *container, p *probe) int {
	t.Helper()
	switch v := p.HTTPGet.Port.(type) {
	case int:
		return v
	case string:
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
		t.Fatalf("probe port %q is not a port of container %s", v, c.Name)
	}
	t.Fatalf("probe port %v has an unexpected type", p.HTTPGet.Port)
	return 0
}

// checkRelay checks one relay container against its config: probes on the
// listen port at /healthz and /readyz, non-root, read-only root, resources.
func checkRelay(t *testing.T, objs []object, w workload) *config.Config {
	t.Helper()
	text, _ := relayConfig(t, objs, w)
	cfg := loadRelayConfig(t, text)
	host, portText, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		t.Fatalf("http.listen %q: %v", cfg.HTTP.Listen, err)
	}
	if host == "127.0.0.1" || host == "localhost" {
		t.Errorf("http.listen %q is loopback only: the kubelet probes the pod IP", cfg.HTTP.Listen)
	}
	listenPort, _ := strconv.Atoi(portText)
	c := w.relay
	for _, pr := range []struct {
		name string
		p    *probe
		path string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("relay container has no httpGet %s", pr.name)
			continue
		}
		u, err := url.Parse(pr.p.HTTPGet.Path)
		if err != nil || u.Path != pr.path {
			t.Errorf("%s path %q, want %s", pr.name, pr.p.HTTPGet.Path, pr.path)
		}
		if got := probePort(t, c, pr.p); got != listenPort {
			t.Errorf("%s port %d, but http.listen is %s", pr.name, got, cfg.HTTP.Listen)
		}
	}
	sc, psc := c.SecurityContext, w.obj.Spec.Template.Spec.SecurityContext
	if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
		t.Error("relay container may run as root: set runAsNonRoot")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("relay container's root filesystem is writable: set readOnlyRootFilesystem")
	}
	for _, k := range []string{"cpu", "memory"} {
		if c.Resources.Requests[k] == "" {
			t.Errorf("relay container has no %s request", k)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("relay container has no memory limit")
	}
	return cfg
}

func isTrue(b *bool) bool { return b != nil && *b }

func TestDeployment(t *testing.T) {
	objs := load(t, "deployment.yaml")
	ws := workloads(t, objs)
	if len(ws) != 1 || ws[0].obj.Kind != "Deployment" {
		t.Fatalf("want one Deployment, got %d workloads", len(ws))
	}
	w := ws[0]
	checkRelay(t, objs, w)

	if r := w.obj.Spec.Replicas; r == nil || *r != 2 {
		t.Errorf("replicas = %v, want 2 (active + hot standby)", r)
	}
	// A standby is never streaming; only a probe that accepts it lets a
	// rollout or a drain proceed.
	if p := w.relay.ReadinessProbe; p != nil && p.HTTPGet != nil && !strings.Contains(p.HTTPGet.Path, "standby=ok") {
		t.Errorf("readiness path %q must accept the hot standby (?standby=ok)", p.HTTPGet.Path)
	}

	var secretRef bool
	for _, e := range w.relay.Env {
		if e.Name != "RELAY_POSTGRES_URL" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		s := find(objs, "Secret", ref.Name)
		if s == nil {
			t.Errorf("RELAY_POSTGRES_URL refers to Secret %s, which is not in the file", ref.Name)
		} else if _, ok := s.StringData[ref.Key]; !ok {
			t.Errorf("Secret %s has no key %s", ref.Name, ref.Key)
		}
		secretRef = true
	}
	if !secretRef {
		t.Error("RELAY_POSTGRES_URL does not come from a Secret")
	}

	var pdb *object
	for i := range objs {
		if objs[i].Kind == "PodDisruptionBudget" {
			pdb = &objs[i]
		}
	}
	switch {
	case pdb == nil:
		t.Error("no PodDisruptionBudget")
	case pdb.APIVersion != "policy/v1":
		t.Errorf("PodDisruptionBudget apiVersion %s, want policy/v1", pdb.APIVersion)
	case pdb.Spec.MaxUnavailable != 1:
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
	case !matches(pdb.Spec.Selector.MatchLabels, w.obj.Spec.Template.Metadata.Labels):
		t.Errorf("PodDisruptionBudget selector %v does not select the relay pods", pdb.Spec.Selector.MatchLabels)
	}
}

func TestSidecar(t *testing.T) {
	objs := load(t, "sidecar.yaml")
	ws := workloads(t, objs)
	if len(ws) != 1 {
		t.Fatalf("want one workload, got %d", len(ws))
	}
	w := ws[0]
	cfg := checkRelay(t, objs, w)
	if n := len(w.obj.Spec.Template.Spec.Containers); n < 2 {
		t.Fatalf("sidecar pod has %d containers, want Postgres and the relay", n)
	}
	var pg *container
	for i := range w.obj.Spec.Template.Spec.Containers {
		if c := &w.obj.Spec.Template.Spec.Containers[i]; strings.HasPrefix(c.Image, "postgres:") {
			pg = c
		}
	}
	if pg == nil {
		t.Fatal("no postgres container")
	}
	if !strings.Contains(strings.Join(pg.Args, " "), "wal_level=logical") {
		t.Errorf("postgres args %v do not set wal_level=logical", pg.Args)
	}
	// Sharing the pod's network namespace is the point of the sidecar.
	// The file's own URL is what the relay uses there (the test's env var
	// stands in for it above), so read it again without the override.
	text, _ := relayConfig(t, objs, w)
	var doc struct {
		Postgres struct {
			URL string `yaml:"url"`
		} `yaml:"postgres"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(doc.Postgres.URL)
	if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost") {
		t.Errorf("sidecar postgres.url %q should point at localhost", doc.Postgres.URL)
	}
	if _, hasPw := u.User.Password(); hasPw {
		t.Errorf("sidecar postgres.url carries a password; use password_file")
	}
	if cfg.Postgres.PasswordFile == "" {
		t.Error("sidecar relay.yaml sets no postgres.password_file")
	}
}
