// Package netguard keeps server-side HTTP requests to URLs that users (or other servers) chose
// away from the server's own network: loopback, private, link-local, multicast, unspecified and
// carrier-grade NAT addresses are refused unless listed as allowed. The check runs on the address
// actually dialled (net.Dialer.Control, after DNS resolution), so a name that resolves to a public
// address when checked and to 127.0.0.1 when connecting (DNS rebinding) gains nothing, and every
// redirect is checked the same way because it dials again.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrForbidden is wrapped by every refusal.
var ErrForbidden = errors.New("netguard: address not allowed")

// denied are the networks refused by default.
var denied = mustPrefixes(
	"0.0.0.0/8",       // "this network", unspecified
	"10.0.0.0/8",      // private (RFC 1918)
	"100.64.0.0/10",   // carrier-grade NAT (RFC 6598)
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local (cloud metadata services live here)
	"172.16.0.0/12",   // private (RFC 1918)
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // documentation
	"192.88.99.0/24",  // 6to4 relay anycast
	"192.168.0.0/16",  // private (RFC 1918)
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // documentation
	"203.0.113.0/24",  // documentation
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, and the broadcast address
	"::/96",           // unspecified, loopback, IPv4-compatible
	"::ffff:0:0:0/96", // IPv4-translated (SIIT)
	"64:ff9b:1::/48",  // local-use NAT64
	"100::/64",        // discard
	"2001::/23",       // IETF protocol assignments (Teredo, ORCHID, ...)
	"2001:db8::/32",   // documentation
	"3fff::/20",       // documentation
	"fc00::/7",        // unique local (ULA)
	"fe80::/10",       // link-local
	"fec0::/10",       // site-local (deprecated)
	"ff00::/8",        // multicast
)

// nat64 (64:ff9b::a.b.c.d) and sixToFour (2002:aabb:ccdd::) carry an IPv4 address.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Guard decides which addresses outgoing requests may reach.
type Guard struct {
	allowed []netip.Prefix
}

// New builds a guard that refuses the default networks except those in allowed (IP addresses or
// CIDRs, e.g. "127.0.0.0/8" for tests or "10.1.2.0/24" for an internal site).
func New(allowed []string) (*Guard, error) {
	g := &Guard{}
	for _, s := range allowed {
		if p, err := netip.ParsePrefix(s); err == nil {
			g.allowed = append(g.allowed, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("netguard: %q is not an IP address or CIDR", s)
		}
		g.allowed = append(g.allowed, netip.PrefixFrom(a, a.BitLen()))
	}
	return g, nil
}

// Check returns nil if ip may be dialled, or an error wrapping ErrForbidden.
func (g *Guard) Check(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrForbidden)
	}
	for _, p := range g.allowed {
		if p.Contains(ip) {
			return nil
		}
	}
	for _, p := range denied {
		if p.Contains(ip) {
			return fmt.Errorf("%w: %s is in %s", ErrForbidden, ip, p)
		}
	}
	// IPv6 forms that carry an IPv4 address to somewhere: judge them by that address too.
	if ip.Is6() {
		b := ip.As16()
		var embedded netip.Addr
		switch {
		case nat64.Contains(ip):
			embedded = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case sixToFour.Contains(ip):
			embedded = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if embedded.IsValid() {
			if err := g.Check(embedded); err != nil {
				return err
			}
		}
	}
	return nil
}

// Control is a net.Dialer.Control function: it refuses connections to forbidden addresses. It
// sees the resolved address of every connection attempt.
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrForbidden, address)
	}
	return g.Check(ap.Addr())
}

// Dialer returns a dialer that refuses forbidden addresses.
func (g *Guard) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.Control}
}

// Transport returns an HTTP transport that dials through the guard and never uses a proxy (a
// proxy would connect on our behalf, unchecked).
func (g *Guard) Transport(dialTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           g.Dialer(dialTimeout).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}
