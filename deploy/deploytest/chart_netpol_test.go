package deploytest

import (
	"net"
	"slices"
	"testing"
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
// its /32 or /128, since an ipBlock takes only CIDR notation.
func TestChartKubeAPIServerCIDRs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"10.96.0.1/32": "10.96.0.1/32", "10.96.0.1": "10.96.0.1/32", "172.20.0.0/16": "172.20.0.0/16", "0.0.0.0/0": "0.0.0.0/0",
		"fd00:10:96::1": "fd00:10:96::1/128", "fd00::/8": "fd00::/8", "::ffff:10.96.0.1": "::ffff:10.96.0.1/128",
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
}
