package resolve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// DNS is the part of *net.Resolver the resolver uses; tests substitute their own answers.
type DNS interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Result is where and how to reach a server.
type Result struct {
	// ServerName is the name that was resolved.
	ServerName string
	// Addrs are the host:port pairs to connect to, in order of preference. A host that is not an
	// IP address still needs an A/AAAA lookup.
	Addrs []string
	// Host is the Host header to send.
	Host string
	// TLSName is what the server's certificate must be valid for: a DNS name, or an IP address
	// (then no SNI is sent).
	TLSName string
}

// Options configure a Resolver.
type Options struct {
	// DNS answers SRV and address lookups; nil uses net.DefaultResolver.
	DNS DNS
	// Transport fetches /.well-known/matrix/server over HTTPS; it must verify certificates and
	// dial as federation does (resolving names with DNS, refusing forbidden addresses).
	Transport http.RoundTripper
	Log       *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Limits of the well-known cache (server-server API, "Resolving server names", step 3).
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownMinTTL     = 5 * time.Minute
	// An invalid answer (not 200, not JSON, no valid m.server) is remembered this long.
	wellKnownInvalidTTL = time.Hour
	// A failed fetch (no connection, TLS error, timeout) is remembered for 2 minutes, doubled for
	// each further failure up to an hour.
	wellKnownFailTTL    = 2 * time.Minute
	wellKnownMaxFailTTL = time.Hour
	wellKnownTimeout    = 15 * time.Second
	wellKnownMaxBytes   = 64 << 10
	wellKnownRedirects  = 5
	// Results (which include SRV answers) are kept at most this long.
	resultTTL = 5 * time.Minute
	// resolveTimeout bounds one resolution (well-known and SRV lookups).
	resolveTimeout = 30 * time.Second
)

// Resolver resolves server names, caching well-known answers and results in memory.
type Resolver struct {
	dns  DNS
	http *http.Client
	log  *slog.Logger
	now  func() time.Time

	flight singleflight.Group

	mu        sync.Mutex
	wellKnown map[string]wellKnownEntry
	results   map[string]resultEntry
}

type wellKnownEntry struct {
	server   string // the m.server value; "" when there is no valid delegation
	expires  time.Time
	failures int // consecutive failed fetches
}

type resultEntry struct {
	res     Result
	expires time.Time
}

// New returns a Resolver.
func New(o Options) *Resolver {
	r := &Resolver{dns: o.DNS, log: o.Log, now: o.Now, wellKnown: map[string]wellKnownEntry{}, results: map[string]resultEntry{}}
	if r.dns == nil {
		r.dns = net.DefaultResolver
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.http = &http.Client{
		Transport: o.Transport,
		Timeout:   wellKnownTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= wellKnownRedirects {
				return errors.New("too many redirects")
			}
			for _, prev := range via {
				if prev.URL.String() == req.URL.String() {
					return errors.New("redirect loop")
				}
			}
			return nil
		},
	}
	return r
}

// Resolve says how to reach serverName. It fails only for an invalid server name or a cancelled
// ctx: whatever well-known and SRV say, there is always a last resort (the host on port 8448).
func (r *Resolver) Resolve(ctx context.Context, serverName string) (Result, error) {
	r.mu.Lock()
	e, ok := r.results[serverName]
	r.mu.Unlock()
	if ok && r.now().Before(e.expires) {
		return e.res, nil
	}
	ch := r.flight.DoChan(serverName, func() (any, error) {
		// Shared by every caller waiting for this name: one caller giving up must not fail the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
		defer cancel()
		res, ttl, err := r.resolve(ctx, serverName)
		if err != nil {
			return Result{}, err
		}
		r.mu.Lock()
		r.results[serverName] = resultEntry{res: res, expires: r.now().Add(ttl)}
		r.mu.Unlock()
		return res, nil
	})
	select {
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case out := <-ch:
		if out.Err != nil {
			return Result{}, out.Err
		}
		return out.Val.(Result), nil
	}
}

// Forget drops what is cached about serverName (after its connections failed, say).
func (r *Resolver) Forget(serverName string) {
	r.mu.Lock()
	delete(r.results, serverName)
	r.mu.Unlock()
}

func (r *Resolver) resolve(ctx context.Context, serverName string) (Result, time.Duration, error) {
	name, err := ParseServerName(serverName)
	if err != nil {
		return Result{}, 0, err
	}
	res := Result{ServerName: serverName, Host: serverName}
	// Steps 1 and 2: an IP literal, or a hostname with an explicit port.
	if name.IsIP() || name.Port != 0 {
		res.Addrs = []string{net.JoinHostPort(name.Host, strconv.Itoa(portOr(name.Port)))}
		res.TLSName = name.Host
		return res, resultTTL, nil
	}
	// Step 3: delegation with /.well-known/matrix/server.
	ttl := resultTTL
	delegated, wkExpires := r.fetchWellKnown(ctx, name.Host)
	if left := wkExpires.Sub(r.now()); left > 0 && left < ttl {
		ttl = left
	}
	if err := ctx.Err(); err != nil {
		return Result{}, 0, err
	}
	if delegated != "" {
		d, _ := ParseServerName(delegated) // validated when cached
		res.Host = delegated
		res.TLSName = d.Host
		if d.IsIP() || d.Port != 0 { // 3.1, 3.2
			res.Addrs = []string{net.JoinHostPort(d.Host, strconv.Itoa(portOr(d.Port)))}
			return res, ttl, nil
		}
		res.Addrs = r.srvOrDefault(ctx, d.Host) // 3.3, 3.4, 3.5
		return res, ttl, nil
	}
	// Steps 4, 5 and 6: SRV records of the server name itself, else port 8448.
	res.TLSName = name.Host
	res.Addrs = r.srvOrDefault(ctx, name.Host)
	return res, ttl, nil
}

func portOr(p int) int {
	if p == 0 {
		return DefaultPort
	}
	return p
}

// srvOrDefault looks up _matrix-fed._tcp.host, then the deprecated _matrix._tcp.host, and falls
// back to host:8448.
func (r *Resolver) srvOrDefault(ctx context.Context, host string) []string {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, srvs, err := r.dns.LookupSRV(ctx, service, "tcp", host)
		if err != nil {
			var dnsErr *net.DNSError
			if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
				r.log.Debug("federation: SRV lookup failed", "service", service, "host", host, "err", err)
			}
			continue
		}
		var addrs []string
		for _, s := range srvs {
			target := strings.TrimSuffix(s.Target, ".")
			if target == "" { // "." means the service is decidedly not available here
				continue
			}
			addrs = append(addrs, net.JoinHostPort(target, strconv.Itoa(int(s.Port))))
		}
		if len(addrs) > 0 {
			return addrs
		}
	}
	return []string{net.JoinHostPort(host, strconv.Itoa(DefaultPort))}
}

// fetchWellKnown returns the m.server delegation of host ("" for none) and until when that answer
// is cached.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Time) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.wellKnown[host]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.server, e.expires
	}
	server, ttl, err := r.getWellKnown(ctx, host)
	if ctx.Err() != nil {
		return "", now // not the server's fault; cache nothing
	}
	next := wellKnownEntry{server: server, expires: now.Add(ttl)}
	if err != nil {
		var invalid *invalidError
		if errors.As(err, &invalid) {
			next.expires = now.Add(wellKnownInvalidTTL)
		} else {
			next.failures = e.failures + 1
			backoff := wellKnownFailTTL << min(next.failures-1, 10)
			next.expires = now.Add(min(backoff, wellKnownMaxFailTTL))
		}
		r.log.Debug("federation: no well-known delegation", "host", host, "err", err, "retry_after", next.expires.Sub(now))
	}
	r.mu.Lock()
	r.wellKnown[host] = next
	r.mu.Unlock()
	return next.server, next.expires
}

// invalidError is a well-known answer that came but is no good.
type invalidError struct{ why string }

func (e *invalidError) Error() string { return "invalid /.well-known/matrix/server: " + e.why }

func (r *Resolver) getWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	// Only DNS names get here: IP literals never use delegation.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, &invalidError{err.Error()}
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, &invalidError{"status " + resp.Status}
	}
	body, err := readLimited(resp.Body, wellKnownMaxBytes)
	if err != nil {
		return "", 0, err
	}
	server, err := parseWellKnown(body)
	if err != nil {
		return "", 0, err
	}
	return server, cacheTTL(resp.Header, r.now()), nil
}

// cacheTTL is how long a well-known answer may be cached by its Cache-Control or Expires header:
// 24 hours when they say nothing, and from 5 minutes to 48 hours whatever they say.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl, found, noCache := time.Duration(0), false, false
	for _, cc := range h.Values("Cache-Control") {
		for _, d := range strings.Split(cc, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			switch {
			case d == "no-store" || d == "no-cache":
				noCache = true
			case strings.HasPrefix(d, "max-age="):
				if n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64); err == nil {
					ttl, found = time.Duration(min(max(n, 0), int64(wellKnownMaxTTL/time.Second)))*time.Second, true
				}
			}
		}
	}
	if !found {
		if exp := h.Get("Expires"); exp != "" {
			found = true
			if t, err := http.ParseTime(exp); err == nil {
				ttl = t.Sub(now)
			} // an invalid Expires means already expired (RFC 9111): ttl stays 0
		}
	}
	switch {
	case noCache:
		return wellKnownMinTTL
	case !found:
		return wellKnownDefaultTTL
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}

// parseWellKnown reads the m.server of a well-known answer: any JSON object (whatever the
// Content-Type) with a valid server name there.
func parseWellKnown(body []byte) (string, error) {
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", &invalidError{"not a JSON object: " + err.Error()}
	}
	if doc.Server == nil {
		return "", &invalidError{"no m.server"}
	}
	if _, err := ParseServerName(*doc.Server); err != nil {
		return "", &invalidError{"m.server: " + err.Error()}
	}
	return *doc.Server, nil
}

// readLimited reads at most limit bytes of r, failing when there are more.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &invalidError{fmt.Sprintf("larger than %d bytes", limit)}
	}
	return b, nil
}
