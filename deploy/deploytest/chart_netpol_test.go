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
