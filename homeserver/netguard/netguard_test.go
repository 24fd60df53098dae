package netguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/netguard"
)

func TestCheck(t *testing.T) {
	g, err := netguard.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip      string
		allowed bool
	}{
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},      // CGNAT
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"fd00::1", false},           // ULA
		{"fe80::1", false},           // link-local
		{"ff02::1", false},           // multicast
		{"64:ff9b::7f00:1", false},   // NAT64 of 127.0.0.1
		{"2002:c0a8:0101::1", false}, // 6to4 of 192.168.1.1
		{"8.8.8.8", true},
		{"172.32.0.1", true},
		{"1.1.1.1", true},
		{"2606:4700:4700::1111", true},
		{"64:ff9b::808:808", true}, // NAT64 of 8.8.8.8
	} {
		err := g.Check(netip.MustParseAddr(tc.ip))
		if (err == nil) != tc.allowed {
			t.Errorf("Check(%s) = %v, want allowed=%v", tc.ip, err, tc.allowed)
		}
		if err != nil && !errors.Is(err, netguard.ErrForbidden) {
			t.Errorf("Check(%s) error %v does not wrap ErrForbidden", tc.ip, err)
		}
	}

	allow, err := netguard.New([]string{"127.0.0.0/8", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"127.0.0.1": true, "10.1.2.3": true, "10.1.2.4": false, "::1": false} {
		if got := allow.Check(netip.MustParseAddr(ip)) == nil; got != want {
			t.Errorf("with allowances, Check(%s) allowed = %v, want %v", ip, got, want)
		}
	}
	if _, err := netguard.New([]string{"localhost"}); err == nil {
		t.Error("New accepted a host name")
	}
}

// TestTransport dials a real loopback server: refused by default (also after a redirect from an
// allowed server), reached when loopback is allowed.
func TestTransport(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "secret") }))
	defer target.Close()

	get := func(g *netguard.Guard, url string) (string, error) {
		c := &http.Client{Transport: g.Transport(5 * time.Second), Timeout: 5 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	strict, _ := netguard.New(nil)
	if _, err := get(strict, target.URL); !errors.Is(err, netguard.ErrForbidden) {
		t.Fatalf("default guard reached loopback: %v", err)
	}
	// "localhost" resolves to loopback: the check is on the resolved address, not the name.
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())
	if _, err := get(strict, "http://localhost:"+port); !errors.Is(err, netguard.ErrForbidden) {
		t.Fatalf("default guard reached localhost: %v", err)
	}
	open, _ := netguard.New([]string{"127.0.0.0/8"})
	if body, err := get(open, target.URL); err != nil || body != "secret" {
		t.Fatalf("allowed loopback: %q, %v", body, err)
	}

	// A redirect is dialled through the guard too: the redirector on ::1 is allowed, the address
	// it redirects to, on 127.0.0.1, is not.
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback")
	}
	redirector := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.RedirectHandler(target.URL, http.StatusFound)}}
	redirector.Start()
	defer redirector.Close()
	onlyV6, _ := netguard.New([]string{"::1"})
	if _, err := get(onlyV6, redirector.URL); !errors.Is(err, netguard.ErrForbidden) {
		t.Fatalf("redirect to a forbidden address was followed: %v", err)
	}

	// Control refuses before any packet is sent.
	d := strict.Dialer(time.Second)
	if _, err := d.DialContext(context.Background(), "tcp", target.Listener.Addr().String()); !errors.Is(err, netguard.ErrForbidden) {
		t.Fatalf("Dialer reached loopback: %v", err)
	}
}
