package clientapi

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// limiter is a set of token buckets keyed by client IP or user ID. Buckets idle for a while are
// forgotten, so memory stays bounded by the number of recently active clients.
type limiter struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	keys  map[string]*bucket
	last  time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(r config.Rate) *limiter {
	return &limiter{rate: rate.Limit(r.PerSecond), burst: r.Burst, keys: make(map[string]*bucket)}
}

// allow takes a token for key, or says how long to wait for one.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) > time.Minute {
		for k, b := range l.keys {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(l.keys, k)
			}
		}
		l.last = now
	}
	b, ok := l.keys[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.keys[key] = b
	}
	b.seen = now
	res := b.lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimited guards an endpoint the spec marks "Rate-limited": authenticated requests by user,
// others by client IP. Exempt IPs pass.
func (a *API) rateLimited(next http.Handler) http.Handler {
	if !a.cfg.RateLimits.Enabled {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := a.clientIP(r)
		if a.exemptIP(ip) {
			next.ServeHTTP(w, r)
			return
		}
		l, key := a.perIP, "ip:"+ip
		if c := callerOf(r); c.UserID != "" {
			l, key = a.perUser, "user:"+string(c.UserID)
		}
		if ok, wait := l.allow(key, time.Now()); !ok {
			writeError(w, r, a.log, spec.LimitExceeded(wait.Milliseconds()+1))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) exemptIP(ip string) bool {
	p := net.ParseIP(ip)
	if p == nil {
		return false
	}
	for _, n := range a.exemptNets {
		if n.Contains(p) {
			return true
		}
	}
	return false
}

// parseNets turns IPs and CIDRs (validated by config) into networks.
func parseNets(list []string) []*net.IPNet {
	var out []*net.IPNet
	for _, s := range list {
		if _, n, err := net.ParseCIDR(s); err == nil {
			out = append(out, n)
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
		}
	}
	return out
}
