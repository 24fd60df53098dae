package fedclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/federation/resolve"
)

// dialer opens connections to host:port, resolving names with the injected DNS and refusing
// addresses the guard forbids (homeserver/netguard: loopback, private, link-local, ... unless
// federation.allowed_networks lists them), so that a server name cannot point us into our own
// network. The guard sees every address before it is dialled.
type dialer struct {
	dns   resolve.DNS
	guard func(netip.Addr) error
	// raw dials an IP:port (tests redirect it to their listeners).
	raw func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (d *dialer) dial(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		if ips, err = d.dns.LookupNetIP(ctx, "ip", host); err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("%s has no addresses", host)
		}
	}
	var errs []error
	for _, ip := range ips {
		if err := d.guard(ip); err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := d.raw(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// dialTLS connects to the first reachable address of a resolution and completes a TLS handshake
// that verifies the certificate against res.TLSName.
func (d *dialer) dialTLS(ctx context.Context, res resolve.Result, base *tls.Config, handshakeTimeout time.Duration) (net.Conn, error) {
	var errs []error
	for _, addr := range res.Addrs {
		raw, err := d.dial(ctx, "tcp", addr)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		cfg := base.Clone()
		cfg.ServerName = res.TLSName // for an IP address Go verifies its IP SAN and sends no SNI
		conn := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err = conn.HandshakeContext(hctx)
		cancel()
		if err == nil {
			return conn, nil
		}
		raw.Close()
		errs = append(errs, fmt.Errorf("TLS with %s (%s): %w", addr, res.TLSName, err))
	}
	return nil, fmt.Errorf("connect to %s: %w", res.ServerName, errors.Join(errs...))
}

// connKey is the URL host under which requests to serverName are pooled: the server name, with
// port 0 standing for "no port" (which no valid server name has), so that example.org and
// example.org:443 are told apart.
func connKey(name resolve.ServerName) string {
	if name.Port != 0 {
		return name.String()
	}
	return net.JoinHostPort(name.Host, "0")
}

// serverNameOf reverses connKey.
func serverNameOf(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]", nil
	}
	return host, nil
}
