// Package deploy holds what runs the gateway elsewhere: Kubernetes
// manifests, a Grafana dashboard and Prometheus rules. Its test decodes
// the manifests strictly with the Kubernetes API types and checks that
// they agree with each other and with the config they ship.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/streamgate/gateway/config"
)

// manifests are the objects under kubernetes/, decoded.
type manifests struct {
	resources  []string
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	deploys    map[string]*appsv1.Deployment
	services   map[string]*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	hpas       []*autoscalingv2.HorizontalPodAutoscaler
	ingresses  []*networkingv1.Ingress
}

// strict decodes one YAML document into out through JSON, refusing any
// field the Kubernetes type does not have (a misspelt probe field would
// otherwise be dropped without a word).
func strict(doc map[string]any, out any) error {
	js, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	return d.Decode(out)
}

func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		deploys: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{}}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := m.add(f, doc); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	return m
}

func (m *manifests) add(file string, doc map[string]any) error {
	kind, _ := doc["kind"].(string)
	switch kind {
	case "Kustomization":
		var k struct {
			APIVersion string   `json:"apiVersion"`
			Kind       string   `json:"kind"`
			Resources  []string `json:"resources"`
		}
		err := strict(doc, &k)
		m.resources = k.Resources
		return err
	case "ConfigMap":
		return into(doc, func(o *corev1.ConfigMap) { m.configMaps[name(doc)] = o })
	case "Secret":
		return into(doc, func(o *corev1.Secret) { m.secrets[name(doc)] = o })
	case "Deployment":
		return into(doc, func(o *appsv1.Deployment) { m.deploys[name(doc)] = o })
	case "Service":
		return into(doc, func(o *corev1.Service) { m.services[name(doc)] = o })
	case "PodDisruptionBudget":
		return into(doc, func(o *policyv1.PodDisruptionBudget) { m.pdbs = append(m.pdbs, o) })
	case "HorizontalPodAutoscaler":
		return into(doc, func(o *autoscalingv2.HorizontalPodAutoscaler) { m.hpas = append(m.hpas, o) })
	case "Ingress":
		return into(doc, func(o *networkingv1.Ingress) { m.ingresses = append(m.ingresses, o) })
	}
	return errors.New("unexpected kind " + strconv.Quote(kind))
}

// into decodes doc strictly as a T and hands it to keep.
func into[T any](doc map[string]any, keep func(*T)) error {
	var o T
	keep(&o)
	return strict(doc, &o)
}

func name(doc map[string]any) string {
	md, _ := doc["metadata"].(map[string]any)
	n, _ := md["name"].(string)
	return n
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// TestKubernetesManifests: every manifest decodes strictly; the
// kustomization lists them all; the shipped config parses and validates
// with the Secret's variables; probes, ports, the drain time, the config
// mount, Redis's address and the objects' references agree.
func TestKubernetesManifests(t *testing.T) {
	m := load(t)
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(m.resources, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
	for _, r := range m.resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}

	gw := m.deploys["gateway"]
	if gw == nil || len(gw.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("no gateway Deployment with one container")
	}
	pod := gw.Spec.Template.Spec
	c := pod.Containers[0]

	// The config the pod reads: the ConfigMap mounted at -config's dir.
	cfgPath := c.Args[slices.Index(c.Args, "-config")+1]
	var cmName string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == path.Dir(cfgPath) {
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.ConfigMap != nil {
					cmName = v.ConfigMap.Name
				}
			}
			if vm.SubPath != "" {
				t.Errorf("the config is mounted with subPath, which never sees ConfigMap updates")
			}
		}
	}
	cm := m.configMaps[cmName]
	if cm == nil {
		t.Fatalf("no ConfigMap mounted at %s", path.Dir(cfgPath))
	}
	yamlText, ok := cm.Data[path.Base(cfgPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cmName, path.Base(cfgPath))
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil {
		t.Fatal("the container takes no Secret's variables")
	}
	sec := m.secrets[c.EnvFrom[0].SecretRef.Name]
	if sec == nil {
		t.Fatalf("no Secret %s", c.EnvFrom[0].SecretRef.Name)
	}
	for _, ref := range envRef.FindAllStringSubmatch(yamlText, -1) {
		if _, ok := sec.StringData[ref[1]]; !ok && ref[2] == "" {
			t.Errorf("the config reads ${%s}, which the Secret does not hold", ref[1])
		}
	}
	for k, v := range sec.StringData {
		t.Setenv(k, v)
	}
	cfg, err := config.Parse(cfgPath, []byte(yamlText))
	if err != nil {
		t.Fatalf("the shipped config: %v", err)
	}

	// Ports and probes.
	_, port, _ := net.SplitHostPort(cfg.Server.Listen)
	var httpPort int32
	for _, p := range c.Ports {
		if p.Name == "http" {
			httpPort = p.ContainerPort
		}
	}
	if strconv.Itoa(int(httpPort)) != port {
		t.Errorf("container port %d, config listens on %s", httpPort, cfg.Server.Listen)
	}
	for _, pr := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/healthz"}, {c.StartupProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("probe %+v, want GET %s on port http", pr.probe, pr.path)
		}
	}

	// The drain: preStop, then shutdown_timeout, within the grace period.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop sleep")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + cfg.Server.ShutdownTimeout.Std() + 5*time.Second; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %s + shutdown_timeout %s + 5s", grace, preStop, cfg.Server.ShutdownTimeout)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("the gateway has no CPU request (the HPA needs one) or memory limit")
	}

	// Shared state: limits, streams and responses in the Redis shipped.
	if cfg.RateLimit.Backend != "redis" || cfg.Streams.Backend != "redis" || cfg.Responses.Backend != "redis" || cfg.Ledger.Backend != config.LedgerPostgres {
		t.Errorf("backends: limits %s, streams %s, responses %s, ledger %s; several replicas need them shared",
			cfg.RateLimit.Backend, cfg.Streams.Backend, cfg.Responses.Backend, cfg.Ledger.Backend)
	}
	host, rport, _ := net.SplitHostPort(string(cfg.RateLimit.Redis.Addr))
	if rs := m.services[host]; rs == nil || strconv.Itoa(int(rs.Spec.Ports[0].Port)) != rport {
		t.Errorf("rate_limit.redis.addr %s is not a Service of the manifests", cfg.RateLimit.Redis.Addr)
	}

	// References between objects.
	labels := gw.Spec.Template.Labels
	selects := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	svc := m.services["gateway"]
	if svc == nil || !selects(svc.Spec.Selector) || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service gateway does not reach the pods' http port: %+v", svc)
	}
	if !selects(gw.Spec.Selector.MatchLabels) {
		t.Error("the Deployment's selector does not match its pods")
	}
	if len(m.pdbs) != 1 || !selects(m.pdbs[0].Spec.Selector.MatchLabels) {
		t.Error("no PodDisruptionBudget over the gateway's pods")
	}
	if len(m.hpas) != 1 || m.hpas[0].Spec.ScaleTargetRef.Name != "gateway" || m.hpas[0].Spec.ScaleTargetRef.Kind != "Deployment" ||
		*m.hpas[0].Spec.MinReplicas < 2 {
		t.Error("no HorizontalPodAutoscaler of the gateway Deployment with at least 2 replicas")
	}
	if len(m.ingresses) != 1 {
		t.Fatal("no Ingress")
	}
	ing := m.ingresses[0]
	be := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service
	if be.Name != "gateway" || be.Port.Name != svc.Spec.Ports[0].Name {
		t.Errorf("the Ingress goes to %s:%s", be.Name, be.Port.Name)
	}
	if ing.Annotations["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
		t.Error("the Ingress buffers responses: SSE would arrive in lumps")
	}
	timeout, _ := strconv.Atoi(ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
	if time.Duration(timeout)*time.Second <= cfg.Server.HeartbeatInterval.Std() || timeout < 600 {
		t.Errorf("proxy-read-timeout %ds: long streams would be cut", timeout)
	}
	if !strings.Contains(yamlText, "trusted_proxies") {
		t.Error("behind an ingress the config must trust its proxies for client addresses")
	}
}
