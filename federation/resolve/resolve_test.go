package resolve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseServerName(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ServerName
	}{
		{"matrix.org", ServerName{Host: "matrix.org"}},
		{"matrix.org:8888", ServerName{Host: "matrix.org", Port: 8888}},
		{"localhost", ServerName{Host: "localhost"}},
		{"1.2.3.4", ServerName{Host: "1.2.3.4", IP: netip.MustParseAddr("1.2.3.4")}},
		{"1.2.3.4:1234", ServerName{Host: "1.2.3.4", Port: 1234, IP: netip.MustParseAddr("1.2.3.4")}},
		{"[1234:5678::abcd]", ServerName{Host: "1234:5678::abcd", IP: netip.MustParseAddr("1234:5678::abcd")}},
		{"[1234:5678::abcd]:5678", ServerName{Host: "1234:5678::abcd", Port: 5678, IP: netip.MustParseAddr("1234:5678::abcd")}},
		{"[::1]:8448", ServerName{Host: "::1", Port: 8448, IP: netip.MustParseAddr("::1")}},
		{"a-b.c-d.example", ServerName{Host: "a-b.c-d.example"}},
	} {
		got, err := ParseServerName(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseServerName(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if got.String() != c.in {
			t.Errorf("String() of %q = %q", c.in, got.String())
		}
	}
	for _, s := range []string{
		"", "matrix.org:", "matrix.org:0", "matrix.org:65536", "matrix.org:abc", "matrix.org:123456",
		"[::1", "[::1]x", "[1.2.3.4]", "[fe80::1%eth0]", "[]", "::1", "1.2.3.256", "01.2.3.4", "1.2.3.4.5:99x",
		"exa mple.org", "example.org/path", "user@example.org", strings.Repeat("a", 256),
	} {
		if n, err := ParseServerName(s); err == nil {
			t.Errorf("ParseServerName(%q) accepted: %+v", s, n)
		}
	}
}

// fakeDNS answers from maps.
type fakeDNS struct {
	mu    sync.Mutex
	srv   map[string][]*net.SRV // "_service._proto.name"
	hosts map[string][]netip.Addr
	calls int
}

func (d *fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	key := "_" + service + "._" + proto + "." + name
	if rs, ok := d.srv[key]; ok {
		return key, rs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

func (d *fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.hosts[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// wellKnowns answers https://HOST/.well-known/matrix/server from a map; hosts not in it refuse
// the connection.
type wellKnowns struct {
	mu      sync.Mutex
	answers map[string]func() *http.Response
	fetches map[string]int
}

func (w *wellKnowns) RoundTrip(req *http.Request) (*http.Response, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fetches[req.URL.Host]++
	if req.URL.Scheme != "https" || req.URL.Path != "/.well-known/matrix/server" {
		return nil, errors.New("unexpected request " + req.URL.String())
	}
	f, ok := w.answers[req.URL.Host]
	if !ok {
		return nil, errors.New("connection refused")
	}
	resp := f()
	resp.Request = req
	return resp, nil
}

func answer(status int, body string, header ...string) func() *http.Response {
	return func() *http.Response {
		h := http.Header{}
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}
	}
}

func TestResolve(t *testing.T) {
	dns := &fakeDNS{srv: map[string][]*net.SRV{
		"_matrix-fed._tcp.srv.test":           {{Target: "fed1.srv.test.", Port: 1111, Priority: 1}},
		"_matrix._tcp.legacy.test":            {{Target: "old.legacy.test.", Port: 2222}},
		"_matrix-fed._tcp.delegated-srv.test": {{Target: "target.test.", Port: 3333}},
		"_matrix-fed._tcp.both.test":          {{Target: "new.both.test.", Port: 4444}},
		"_matrix._tcp.both.test":              {{Target: "old.both.test.", Port: 5555}},
		"_matrix-fed._tcp.dot.test":           {{Target: ".", Port: 0}},
	}}
	wk := &wellKnowns{fetches: map[string]int{}, answers: map[string]func() *http.Response{
		"wk-port.test":        answer(200, `{"m.server": "delegated.test:9000"}`),
		"wk-ip.test":          answer(200, `{"m.server": "127.0.0.7"}`),
		"wk-ip6.test":         answer(200, `{"m.server": "[::1]:9001"}`),
		"wk-srv.test":         answer(200, `{"m.server": "delegated-srv.test"}`),
		"wk-plain.test":       answer(200, `{"m.server": "plain.test"}`, "Content-Type", "text/plain"),
		"wk-404.test":         answer(404, `{"errcode":"M_NOT_FOUND"}`),
		"wk-badjson.test":     answer(200, `{"m.server": `),
		"wk-badname.test":     answer(200, `{"m.server": "bad name"}`),
		"wk-notstr.test":      answer(200, `{"m.server": 42}`),
		"wk-srv-ignored.test": answer(200, `{"m.server": "wk-srv-ignored.test"}`),
	}}
	r := New(Options{DNS: dns, Transport: wk})
	ctx := context.Background()
	for _, c := range []struct {
		name string
		want Result
	}{
		// Step 1: IP literals, 8448 unless a port is given; Host is the server name.
		{"127.0.0.5", Result{Addrs: []string{"127.0.0.5:8448"}, Host: "127.0.0.5", TLSName: "127.0.0.5"}},
		{"127.0.0.5:1234", Result{Addrs: []string{"127.0.0.5:1234"}, Host: "127.0.0.5:1234", TLSName: "127.0.0.5"}},
		{"[::1]", Result{Addrs: []string{"[::1]:8448"}, Host: "[::1]", TLSName: "::1"}},
		{"[::1]:8000", Result{Addrs: []string{"[::1]:8000"}, Host: "[::1]:8000", TLSName: "::1"}},
		// Step 2: a hostname with a port: no well-known, no SRV.
		{"srv.test:8000", Result{Addrs: []string{"srv.test:8000"}, Host: "srv.test:8000", TLSName: "srv.test"}},
		// Step 3.1: delegation to an IP literal.
		{"wk-ip.test", Result{Addrs: []string{"127.0.0.7:8448"}, Host: "127.0.0.7", TLSName: "127.0.0.7"}},
		{"wk-ip6.test", Result{Addrs: []string{"[::1]:9001"}, Host: "[::1]:9001", TLSName: "::1"}},
		// Step 3.2: delegation to a hostname with a port.
		{"wk-port.test", Result{Addrs: []string{"delegated.test:9000"}, Host: "delegated.test:9000", TLSName: "delegated.test"}},
		// Step 3.3: delegation to a hostname, whose _matrix-fed._tcp SRV gives the target.
		{"wk-srv.test", Result{Addrs: []string{"target.test:3333"}, Host: "delegated-srv.test", TLSName: "delegated-srv.test"}},
		// Step 3.5: delegation to a hostname without SRV: port 8448 (the Content-Type does not matter).
		{"wk-plain.test", Result{Addrs: []string{"plain.test:8448"}, Host: "plain.test", TLSName: "plain.test"}},
		// Steps 4 and 5: no well-known, SRV of the name itself; _matrix-fed before _matrix.
		{"srv.test", Result{Addrs: []string{"fed1.srv.test:1111"}, Host: "srv.test", TLSName: "srv.test"}},
		{"legacy.test", Result{Addrs: []string{"old.legacy.test:2222"}, Host: "legacy.test", TLSName: "legacy.test"}},
		{"both.test", Result{Addrs: []string{"new.both.test:4444"}, Host: "both.test", TLSName: "both.test"}},
		// Step 6: nothing at all: port 8448.
		{"plain-host.test", Result{Addrs: []string{"plain-host.test:8448"}, Host: "plain-host.test", TLSName: "plain-host.test"}},
		{"dot.test", Result{Addrs: []string{"dot.test:8448"}, Host: "dot.test", TLSName: "dot.test"}},
		// Invalid well-known answers are skipped to step 4.
		{"wk-404.test", Result{Addrs: []string{"wk-404.test:8448"}, Host: "wk-404.test", TLSName: "wk-404.test"}},
		{"wk-badjson.test", Result{Addrs: []string{"wk-badjson.test:8448"}, Host: "wk-badjson.test", TLSName: "wk-badjson.test"}},
		{"wk-badname.test", Result{Addrs: []string{"wk-badname.test:8448"}, Host: "wk-badname.test", TLSName: "wk-badname.test"}},
		{"wk-notstr.test", Result{Addrs: []string{"wk-notstr.test:8448"}, Host: "wk-notstr.test", TLSName: "wk-notstr.test"}},
	} {
		got, err := r.Resolve(ctx, c.name)
		c.want.ServerName = c.name
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Resolve(%q) = %+v, %v\n want %+v", c.name, got, err, c.want)
		}
	}
	// IP literals and explicit ports never ask for well-known.
	for _, h := range []string{"127.0.0.5", "[::1]", "::1"} {
		if wk.fetches[h] != 0 {
			t.Errorf("well-known fetched for %s", h)
		}
	}
	calls := dns.calls
	if _, err := r.Resolve(ctx, "only-port.test:8000"); err != nil || wk.fetches["only-port.test"] != 0 || dns.calls != calls {
		t.Errorf("a name with a port asked for well-known or SRV: %v", err)
	}
	if _, err := r.Resolve(ctx, "not a name"); err == nil {
		t.Error("invalid server name resolved")
	}
}

func TestResolveCaching(t *testing.T) {
	clk := time.Now()
	now := func() time.Time { return clk }
	dns := &fakeDNS{}
	wk := &wellKnowns{fetches: map[string]int{}, answers: map[string]func() *http.Response{
		"default.test": answer(200, `{"m.server": "d.test:1"}`),
		"maxage.test":  answer(200, `{"m.server": "m.test:1"}`, "Cache-Control", "public, max-age=600"),
		"invalid.test": answer(500, ``),
	}}
	r := New(Options{DNS: dns, Transport: wk, Now: now})
	ctx := context.Background()
	resolve := func(name string) Result {
		t.Helper()
		res, err := r.Resolve(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, n := range []string{"default.test", "maxage.test", "invalid.test", "down.test"} {
		resolve(n)
		resolve(n)
	}
	for _, n := range []string{"default.test", "maxage.test", "invalid.test", "down.test"} {
		if wk.fetches[n] != 1 {
			t.Fatalf("%s fetched %d times, want 1", n, wk.fetches[n])
		}
	}
	// 11 minutes later: the max-age=600 answer and the failed connection (2 minutes) are fetched
	// again; the default (24h) and invalid (1h) ones are not.
	clk = clk.Add(11 * time.Minute)
	for _, n := range []string{"default.test", "maxage.test", "invalid.test", "down.test"} {
		resolve(n)
	}
	want := map[string]int{"default.test": 1, "maxage.test": 2, "invalid.test": 1, "down.test": 2}
	for n, w := range want {
		if wk.fetches[n] != w {
			t.Errorf("after 11 minutes %s fetched %d times, want %d", n, wk.fetches[n], w)
		}
	}
	// A failing server is retried later and later: the second failure is cached 4 minutes.
	clk = clk.Add(3 * time.Minute)
	resolve("down.test")
	if wk.fetches["down.test"] != 2 {
		t.Errorf("down.test retried after 3 minutes")
	}
	clk = clk.Add(2 * time.Minute)
	resolve("down.test")
	if wk.fetches["down.test"] != 3 {
		t.Errorf("down.test not retried after 5 minutes")
	}
	// After 25 hours everything is fetched again; the delegation can change.
	wk.answers["default.test"] = answer(200, `{"m.server": "d2.test:2"}`)
	clk = clk.Add(25 * time.Hour)
	if got := resolve("default.test"); got.Host != "d2.test:2" || wk.fetches["default.test"] != 2 {
		t.Errorf("after 25 hours: %+v, fetches %d", got, wk.fetches["default.test"])
	}
	// Forget drops the result (not the well-known answer).
	r.Forget("default.test")
	resolve("default.test")
	if wk.fetches["default.test"] != 2 {
		t.Errorf("Forget refetched the well-known answer")
	}
}

func TestCacheTTL(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		header []string
		want   time.Duration
	}{
		{nil, 24 * time.Hour},
		{[]string{"Cache-Control", "max-age=3600"}, time.Hour},
		{[]string{"Cache-Control", "public, max-age=7200, must-revalidate"}, 2 * time.Hour},
		{[]string{"Cache-Control", "max-age=10"}, 5 * time.Minute},       // at least 5 minutes
		{[]string{"Cache-Control", "max-age=999999999"}, 48 * time.Hour}, // at most 48 hours
		{[]string{"Cache-Control", "no-store"}, 5 * time.Minute},
		{[]string{"Cache-Control", "no-cache, max-age=3600"}, 5 * time.Minute},
		{[]string{"Cache-Control", "max-age=junk"}, 24 * time.Hour},
		{[]string{"Expires", now.Add(3 * time.Hour).Format(http.TimeFormat)}, 3 * time.Hour},
		{[]string{"Expires", "0"}, 5 * time.Minute},
		{[]string{"Expires", now.Add(3 * time.Hour).Format(http.TimeFormat), "Cache-Control", "max-age=600"}, 10 * time.Minute},
	} {
		h := http.Header{}
		for i := 0; i+1 < len(c.header); i += 2 {
			h.Set(c.header[i], c.header[i+1])
		}
		if got := cacheTTL(h, now); got != c.want {
			t.Errorf("cacheTTL(%v) = %v, want %v", c.header, got, c.want)
		}
	}
}
