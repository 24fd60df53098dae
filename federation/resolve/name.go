// Package resolve finds where a Matrix server name is reached (server-server API, "Resolving
// server names"): IP literals and explicit ports directly, then /.well-known/matrix/server
// delegation, then SRV records (_matrix-fed._tcp, and the deprecated _matrix._tcp), then port
// 8448. It says which addresses to dial, which Host header to send and which name the server's
// TLS certificate must be valid for.
package resolve

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// DefaultPort is the federation port when neither the server name, delegation nor SRV gives one.
const DefaultPort = 8448

// ServerName is a parsed server name: hostname [":" port].
type ServerName struct {
	// Host is the DNS name or the IP address, without the brackets of an IPv6 literal.
	Host string
	// Port is 0 when the name has none.
	Port int
	// IP is the address when Host is an IP literal, invalid otherwise.
	IP netip.Addr
}

// ParseServerName parses and validates a server name per the grammar of the appendices: a DNS
// name, a dotted-quad IPv4 address or a bracketed IPv6 address, with an optional port 1-65535.
func ParseServerName(s string) (ServerName, error) {
	if err := spec.ValidServerName(s); err != nil {
		return ServerName{}, err
	}
	var n ServerName
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		host, port = s[1:end], strings.TrimPrefix(s[end+1:], ":")
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return ServerName{}, fmt.Errorf("server name %q has an invalid IPv6 literal", s)
		}
		n.IP = ip
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
		}
		if looksLikeIPv4(host) {
			ip, err := netip.ParseAddr(host)
			if err != nil || !ip.Is4() {
				return ServerName{}, fmt.Errorf("server name %q has an invalid IPv4 address", s)
			}
			n.IP = ip
		}
	}
	n.Host = host
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return ServerName{}, fmt.Errorf("server name %q has an invalid port", s)
		}
		n.Port = p
	}
	return n, nil
}

// looksLikeIPv4 reports whether host has the shape of the IPv4address rule (four dot-separated
// runs of digits): such a name is an address, never a DNS name.
func looksLikeIPv4(host string) bool {
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// IsIP reports whether the host is an IP literal.
func (n ServerName) IsIP() bool { return n.IP.IsValid() }

// HostLiteral is the host as written in a URL or Host header: IPv6 addresses in brackets.
func (n ServerName) HostLiteral() string {
	if n.IP.Is6() {
		return "[" + n.Host + "]"
	}
	return n.Host
}

// String is the server name: host, with the port if it has one.
func (n ServerName) String() string {
	if n.Port == 0 {
		return n.HostLiteral()
	}
	return net.JoinHostPort(n.Host, strconv.Itoa(n.Port))
}
