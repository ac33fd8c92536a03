package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kubeAPIServerBlocks returns the ipBlock CIDRs of the kube-reconciler's
// egress to the Kubernetes API server (the rule on port 6443).
func kubeAPIServerBlocks(t *testing.T, r rendered) []string {
	t.Helper()
	var out []string
	for _, to := range egressByPort(t, r, "kube-reconciler")[6443] {
		for _, p := range to {
			if p.IPBlock != nil {
				out = append(out, p.IPBlock.CIDR)
			}
		}
	}
	return out
}

// TestChartKubeAPIServerCIDRs: networkPolicy.kubeAPIServer.cidrs takes
// what runnerAllowedNetworks takes (the schema's ipNetwork: IPv4 or IPv6
// networks, or single addresses) and refuses the rest, which the old
// pattern let through for the API server to refuse at install (an octet
// over 255, a prefix past /32 or /128, a zone); a single address becomes
// its /32 or /128, since an ipBlock takes only CIDR notation. What the
// kube-apiserver refuses in an ipBlock beyond that form, a network with
// bits set beyond its prefix length (10.96.0.1/8) and an IPv4-mapped IPv6
// address, the chart refuses at render time, naming the entry
// (TestChartOnKubeAPIServer/"kubeAPIServer cidrs" checks the same values
// against the real API server).
func TestChartKubeAPIServerCIDRs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"10.96.0.1/32": "10.96.0.1/32", "10.96.0.1": "10.96.0.1/32", "172.20.0.0/16": "172.20.0.0/16", "0.0.0.0/0": "0.0.0.0/0",
		"fd00:10:96::1": "fd00:10:96::1/128", "fd00::/8": "fd00::/8", "10.96.0.0/31": "10.96.0.0/31",
	} {
		r, err := render(t, parseValues(t, `networkPolicy: {kubeAPIServer: {cidrs: ["`+in+`"]}}`))
		if err != nil {
			t.Errorf("cidrs [%s] refused: %v", in, err)
			continue
		}
		got := kubeAPIServerBlocks(t, r)
		if !slices.Equal(got, []string{want}) {
			t.Errorf("cidrs [%s]: ipBlocks %q, want [%s]", in, got, want)
		}
		for _, c := range got {
			if _, _, err := net.ParseCIDR(c); err != nil {
				t.Errorf("cidrs [%s]: ipBlock %q is not CIDR notation (Kubernetes refuses it): %v", in, c, err)
			}
		}
	}
	for _, bad := range []string{"10.96.0.0/33", "999.1.1.1/8", "10.096.0.1/32", "10.96.0.1/032", "::/129", "fe80::1%eth0/64", "1:2:3:4:5:6:7:8:9/64", "kubernetes", "10.96.0.1/"} {
		if _, err := render(t, parseValues(t, `networkPolicy: {kubeAPIServer: {cidrs: ["`+bad+`"]}}`)); err == nil {
			t.Errorf("cidrs [%s] accepted; Kubernetes or agui-proxy's parser would refuse it", bad)
		}
	}
	for bad, wantErr := range map[string]string{
		"10.96.0.1/8":          `networkPolicy.kubeAPIServer.cidrs[1] "10.96.0.1/8" has bits set beyond its /8 prefix: the kube-apiserver refuses it in a NetworkPolicy ipBlock ("must not have bits set beyond the prefix length"); write the network, 10.0.0.0/8, or the single address, 10.96.0.1/32`,
		"172.20.1.1/16":        `"172.20.1.1/16" has bits set beyond its /16 prefix`,
		"10.96.0.1/31":         `"10.96.0.1/31" has bits set beyond its /31 prefix`,
		"fd00:10:96::1/64":     `networkPolicy.kubeAPIServer.cidrs[1] "fd00:10:96::1/64" has bits set beyond its /64 prefix: the kube-apiserver refuses it in a NetworkPolicy ipBlock ("must not have bits set beyond the prefix length"); write the network, fd00:10:96::/64, or the single address, fd00:10:96::1/128`,
		"::ffff:10.96.0.1":     `networkPolicy.kubeAPIServer.cidrs[1] "::ffff:10.96.0.1" is an IPv4-mapped IPv6 address, which the kube-apiserver refuses in a NetworkPolicy ipBlock`,
		"::ffff:0:0/96":        `"::ffff:0:0/96" is an IPv4-mapped IPv6 address`,
		"::FFFF:10.96.0.0/104": `"::FFFF:10.96.0.0/104" is an IPv4-mapped IPv6 address`,
	} {
		_, err := render(t, parseValues(t, `networkPolicy: {kubeAPIServer: {cidrs: ["10.96.0.1/32", "`+bad+`"]}}`))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("cidrs [10.96.0.1/32, %s]: error %v, want one containing %s", bad, err, wantErr)
		}
	}
}

// kubeAPIServerCIDRCandidates are entries of networkPolicy.kubeAPIServer.cidrs
// that testKubeAPIServerCIDRs renders and sends to the kube-apiserver.
var kubeAPIServerCIDRCandidates = []string{
	"10.96.0.1/32", "10.96.0.1", "10.0.0.0/8", "0.0.0.0/0", "10.96.0.0/31", "255.255.255.255/32",
	"fd00:10:96::1", "fd00::/8", "::/0", "2001:db8::/32", "fe80::1", "::10.0.0.1",
	// The API server takes these with a warning (not RFC 5952 canonical).
	"2001:DB8::/32", "0010::/16", "1:2:3:4:5:6:1.2.3.0/120",
	// Bits set beyond the prefix length.
	"10.96.0.1/8", "10.96.0.1/31", "172.20.1.1/16", "1.2.3.4/0", "fd00:10:96::1/64", "::1/127",
	"1::2:3:4:5:6:7/64", "1:2:3:4:5::1.2.3.4/120",
	// IPv4-mapped IPv6 addresses.
	"::ffff:10.96.0.1", "::ffff:10.0.0.0/104", "::ffff:0:0/96",
}

// testKubeAPIServerCIDRs: the chart accepts an entry of
// networkPolicy.kubeAPIServer.cidrs exactly when the kube-apiserver accepts
// the ipBlock it becomes (the kube-reconciler's NetworkPolicy). For an entry
// the chart refuses, the NetworkPolicy rendered with a good entry is sent
// with the entry's ipBlock in its place. A value the chart took but the API
// server refused would fail the install with the API server's error, after
// some objects were created.
func testKubeAPIServerCIDRs(ctx context.Context, t *testing.T, k *kube) {
	const placeholder = "192.0.2.0/24"
	base := mustRender(t, parseValues(t, `networkPolicy: {kubeAPIServer: {cidrs: ["`+placeholder+`"]}}`)).find("NetworkPolicy", name("kube-reconciler"))
	if base == nil {
		t.Fatal("no kube-reconciler NetworkPolicy rendered")
	}
	w := &warnings{}
	cl := k.client(t, k.admin, w)
	for _, in := range kubeAPIServerCIDRCandidates {
		r, renderErr := render(t, parseValues(t, `networkPolicy: {kubeAPIServer: {cidrs: ["`+in+`"]}}`))
		var np *unstructured.Unstructured
		if renderErr == nil {
			np = r.find("NetworkPolicy", name("kube-reconciler"))
		} else {
			// The ipBlock the chart would have made: a single address is
			// its /32 or /128.
			block := in
			if !strings.Contains(block, "/") {
				block += map[bool]string{false: "/32", true: "/128"}[strings.Contains(block, ":")]
			}
			data, err := json.Marshal(base.Object)
			if err != nil {
				t.Fatal(err)
			}
			np = &unstructured.Unstructured{}
			if err := json.Unmarshal([]byte(strings.ReplaceAll(string(data), strconv.Quote(placeholder), strconv.Quote(block))), &np.Object); err != nil {
				t.Fatal(err)
			}
		}
		applyErr := k.apply(ctx, cl, np, true)
		if chartAccepts, serverAccepts := renderErr == nil, applyErr == nil; chartAccepts != serverAccepts {
			t.Errorf("cidrs [%s]: chart accepts = %v (render error: %v), kube-apiserver accepts = %v (%v)", in, chartAccepts, renderErr, serverAccepts, applyErr)
		}
		if msgs := w.take(); len(msgs) > 0 {
			t.Logf("cidrs [%s]: API server warnings %q", in, msgs)
		}
	}
}

// TestChartHostBitsName: the chart's refusal of a network with bits set
// beyond its prefix length names the network the proxy would have taken
// instead and the single address, in Go's netip form (the templates expand,
// mask and print addresses themselves: Sprig has no IP functions).
func TestChartHostBitsName(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"10.1.2.3/8", "10.244.1.17/31", "255.255.255.255/1", "1.2.3.4/0", "192.168.1.17/27",
		"fd00::1/8", "::1/127", "fd00:0:0:1::17/64", "1::2:3:4:5:6:7/64", "1:2:3:4:5:6:7::/64",
		"1:2:3:4:5::1.2.3.4/120", "2001:DB8::1/32", "ffff::ffff/1", "0:0:0:1::1/65",
		"1:0:0:2:0:0:0:3/127", "abcd:ef01:2345:6789:abcd:ef01:2345:6789/37",
	} {
		p := netip.MustParsePrefix(in)
		want := fmt.Sprintf("%q has bits set beyond its /%d prefix: agui-proxy refuses it (the network or the single address?); write the network, %s, or the single address, %s/%d",
			in, p.Bits(), p.Masked(), strings.Split(in, "/")[0], p.Addr().BitLen())
		_, err := render(t, parseValues(t, `aguiProxy: {runnerAllowedNetworks: ["`+in+`"]}`))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %s", in, err, want)
		}
	}
}

// TestChartRunnerManagerPeersProbeRunners: before a runner-manager replica
// takes over a session whose owner has no heartbeat, it GETs /health of
// the session's runner on the owner's pod IP and a runner port
// (services/runner-manager/internal/claim, OwnerGone: a NATS outage is
// not death). The runner-manager NetworkPolicy must let that probe
// through, for every track: ingress on the runner ports from this
// release's runner-manager pods beside the agui-proxy, and egress to them
// on those ports. Dropped, the probe reads as "gone" and a live session is
// started a second time on the prober.
func TestChartRunnerManagerPeersProbeRunners(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `runnerManager: {portRange: "9200-9249", canary: {enabled: true, image: {tag: 0.2.0-rc.1}, partitions: "0"}}`))
	u := r.find("NetworkPolicy", name("runner-manager"))
	if u == nil {
		t.Fatal("no runner-manager NetworkPolicy")
	}
	np := toTyped[networkingv1.NetworkPolicy](t, u)
	runnerPorts := func(ports []networkingv1.NetworkPolicyPort) bool {
		return slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool {
			return p.Port != nil && p.Port.IntVal == 9200 && p.EndPort != nil && *p.EndPort == 9249 &&
				(p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP)
		})
	}
	// reaches: one of peers selects pods with these labels in the
	// release's namespace.
	reaches := func(peers []networkingv1.NetworkPolicyPeer, podLabels map[string]string) bool {
		return slices.ContainsFunc(peers, func(p networkingv1.NetworkPolicyPeer) bool {
			return p.IPBlock == nil && p.NamespaceSelector == nil && p.PodSelector != nil && matches(p.PodSelector.MatchLabels, podLabels)
		})
	}
	proxy := deployment(t, r, name("agui-proxy")).Spec.Template.Labels
	for _, d := range []string{name("runner-manager"), name("runner-manager-canary")} {
		peer := deployment(t, r, d).Spec.Template.Labels
		var from, to bool
		for _, rule := range np.Spec.Ingress {
			if runnerPorts(rule.Ports) && reaches(rule.From, peer) {
				from = true
			}
		}
		for _, rule := range np.Spec.Egress {
			if runnerPorts(rule.Ports) && reaches(rule.To, peer) {
				to = true
			}
		}
		if !from || !to {
			t.Errorf("runner ports 9200-9249: ingress from %s pods = %v, egress to them = %v; want both (the takeover probe GETs a peer's runner /health)", d, from, to)
		}
	}
	var fromProxy bool
	for _, rule := range np.Spec.Ingress {
		if runnerPorts(rule.Ports) && reaches(rule.From, proxy) {
			fromProxy = true
		}
	}
	if !fromProxy {
		t.Error("runner ports no longer admit the agui-proxy")
	}
}

// TestChartNetworkPolicyDNS: every NetworkPolicy of the chart (each
// service's and the bundled NATS's) lets its pods resolve names on ports
// 53 and 5353, over UDP and TCP, to any destination. 5353: on OpenShift
// the cluster DNS Service maps port 53 to the DNS pods' 5353 and
// OVN-Kubernetes applies egress policy after that translation, so a policy
// that allows only 53 drops every lookup.
func TestChartNetworkPolicyDNS(t *testing.T) {
	t.Parallel()
	r := mustRender(t, localRunnersWith(t, `networkPolicy: {enabled: true}`))
	nps := r.ofKind("NetworkPolicy")
	if len(nps) != len(components)+1 {
		t.Fatalf("%d NetworkPolicies, want one per service and the NATS one", len(nps))
	}
	for _, u := range nps {
		np := toTyped[networkingv1.NetworkPolicy](t, u)
		var got []string
		for _, e := range np.Spec.Egress {
			if len(e.To) != 0 {
				continue
			}
			for _, p := range e.Ports {
				proto := corev1.ProtocolTCP
				if p.Protocol != nil {
					proto = *p.Protocol
				}
				if p.Port != nil && p.EndPort == nil && (p.Port.IntVal == 53 || p.Port.IntVal == 5353) {
					got = append(got, fmt.Sprintf("%d/%s", p.Port.IntVal, proto))
				}
			}
		}
		slices.Sort(got)
		if want := []string{"53/TCP", "53/UDP", "5353/TCP", "5353/UDP"}; !slices.Equal(got, want) {
			t.Errorf("NetworkPolicy %s: DNS egress %q, want %q to anywhere", np.Name, got, want)
		}
	}
}

// TestChartNATSPortsFollowURLs: the services' NATS egress opens the ports
// NATS actually listens on: with the bundled NATS the nats chart's client
// port (nats.config.nats.port, also in NATS_URL and the NATS pods' ingress
// rule); with an external NATS the port of every URL of externalNats.url,
// or nats.go's default for the scheme when a URL has none (4222; 80 for
// ws, 443 for wss), unless natsPort overrides them. Before, natsPort (4222)
// was used whatever the URL said: tls://nats.example.com:443 got no
// egress at all.
func TestChartNATSPortsFollowURLs(t *testing.T) {
	t.Parallel()
	external := func(url string) string {
		return fmt.Sprintf(`{nats: {enabled: false}, externalNats: {url: %q}}`, url)
	}
	tests := []struct {
		name, values string
		ports        []int32
		url          string // NATS_URL, when bundled
	}{
		{"bundled", ``, []int32{4222}, "nats://acp-nats.ambient-system.svc:4222"},
		{"bundled on another port", `nats: {config: {nats: {port: 4333}}}`, []int32{4333}, "nats://acp-nats.ambient-system.svc:4333"},
		{"bundled, natsPort the same", `{nats: {config: {nats: {port: 4333}}}, natsPort: 4333}`, []int32{4333}, "nats://acp-nats.ambient-system.svc:4333"},
		{"external over TLS on 443", external("tls://nats.example.com:443"), []int32{443}, ""},
		{"external cluster", external("nats://nats-0.messaging:4222,nats://nats-1.messaging:5222,tls://user:pw@nats-2.messaging:4222"), []int32{4222, 5222}, ""},
		{"external without a port", external("nats://nats.messaging"), []int32{4222}, ""},
		{"websocket without a port", external("ws://nats.messaging"), []int32{80}, ""},
		{"secure websocket without a port", external("wss://nats.example.com/ws"), []int32{443}, ""},
		{"external on IPv6", external("nats://[fd00::1]:7422"), []int32{7422}, ""},
		{"external with natsPort", `{nats: {enabled: false}, externalNats: {url: "nats://nats.messaging:4222"}, natsPort: 14222}`, []int32{14222}, ""},
	}
	natsLike := []int32{80, 443, 4222, 4333, 5222, 7422, 14222}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, localRunnersWith(t, tc.values))
			for _, comp := range components {
				egress := egressByPort(t, r, comp)
				for _, p := range natsLike {
					want := slices.Contains(tc.ports, p)
					// Rules on 443 that are not NATS's: the runners' HTTPS
					// (networkPolicy.runnerEgress) and the Kubernetes API
					// (networkPolicy.kubeAPIServer.ports).
					extra := 0
					if (comp == "runner-manager" || comp == "kube-reconciler") && p == 443 {
						extra = 1
					}
					if got := len(egress[p]) > extra; got != want {
						t.Errorf("%s: NATS egress on port %d = %v, want %v (ports %v)", comp, p, got, want, tc.ports)
					}
				}
				if tc.url != "" {
					if got := envOf(t, r, deployment(t, r, name(comp)))["NATS_URL"]; got != tc.url {
						t.Errorf("%s: NATS_URL = %q, want %q", comp, got, tc.url)
					}
				}
			}
			if tc.url == "" {
				return
			}
			var client []int32
			for _, rule := range toTyped[networkingv1.NetworkPolicy](t, r.find("NetworkPolicy", name("nats"))).Spec.Ingress {
				for _, from := range rule.From {
					if from.PodSelector != nil && from.PodSelector.MatchLabels["app.kubernetes.io/name"] == "ambient-control-plane" {
						for _, p := range rule.Ports {
							client = append(client, p.Port.IntVal)
						}
					}
				}
			}
			if !slices.Equal(client, tc.ports) {
				t.Errorf("bundled NATS admits this release's pods on %v, want %v", client, tc.ports)
			}
		})
	}
}
