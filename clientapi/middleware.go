package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

type ctxKey int

const (
	keyCaller ctxKey = iota
	keyRequestID
	keyStreamPoll // set on the /sync calls of an SSE or WebSocket stream after its first
	keyLogger
)

// reqInfo is what the middleware learns of a request, in one context value (keyRequestID): its
// ID, then its caller, set in place by requireAuth, so that authenticating does not copy the
// request again for a context of its own. It is itself the request's context from withRequestID
// on (the one before, with keyRequestID answered), and holds the X-Request-Id header's value:
// one allocation instead of three per request.
type reqInfo struct {
	context.Context
	id       string
	caller   *account.Caller
	idHeader [1]string
}

// Value answers keyRequestID with the reqInfo, anything else from the context before.
func (ri *reqInfo) Value(key any) any {
	if k, ok := key.(ctxKey); ok && k == keyRequestID {
		return ri
	}
	return ri.Context.Value(key)
}

// callerOf returns the authenticated caller; only valid behind requireAuth (or a handler that put
// a caller under keyCaller).
func callerOf(r *http.Request) account.Caller {
	if c, ok := r.Context().Value(keyCaller).(account.Caller); ok {
		return c
	}
	if ri, _ := r.Context().Value(keyRequestID).(*reqInfo); ri != nil && ri.caller != nil {
		return *ri.caller
	}
	return account.Caller{}
}

// RequestID returns the ID the middleware gave the request.
func RequestID(ctx context.Context) string {
	if ri, _ := ctx.Value(keyRequestID).(*reqInfo); ri != nil {
		return ri.id
	}
	return ""
}

// withRequestID tags every request with an ID (kept from X-Request-Id if a proxy set a sane one),
// echoes it in the response, and adds it to the logger.
func (a *API) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 || strings.ContainsAny(id, " \t\r\n") {
			id = newRequestID()
		}
		ri := &reqInfo{Context: r.Context(), id: id}
		ri.idHeader[0] = id
		w.Header()["X-Request-Id"] = ri.idHeader[:]
		next.ServeHTTP(w, r.WithContext(ri))
	})
}

// requestIDs numbers the requests of this process; newRequestID scrambles the number with a
// random key, so IDs are unique without a read of the system's random source per request, and do
// not tell a client how many requests the server has served.
var requestIDs = struct {
	key uint64
	n   atomic.Uint64
}{key: randomUint64()}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// newRequestID is 16 hex digits, different for every request of the process: the request's
// number through a bijection of uint64 (SplitMix64's finaliser) keyed by requestIDs.key.
func newRequestID() string {
	x := requestIDs.n.Add(1) ^ requestIDs.key
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], x)
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status code for logs and metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// withLogAndMetrics logs each request at debug level (errors at warn) and counts it by route and
// status, and turns a panic into a logged M_UNKNOWN instead of a dropped connection.
func (a *API) withLogAndMetrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				a.log.ErrorContext(r.Context(), "panic in handler", "panic", p, "method", r.Method, "path", r.URL.Path,
					"request_id", RequestID(r.Context()))
				if rec.status == 0 {
					writeJSON(rec, http.StatusInternalServerError, spec.ErrUnknown)
				}
			}
			rc := chi.RouteContext(r.Context())
			elapsed := time.Since(start)
			rm := a.metrics.forRoute(r.Method, rc, rec.status)
			rm.requests.Inc()
			rm.duration.Observe(elapsed.Seconds())
			level := slog.LevelDebug
			if rec.status >= 500 {
				level = slog.LevelWarn
			}
			if a.log.Enabled(r.Context(), level) { // most requests: not worth building the record
				a.log.Log(r.Context(), level, "request", "request_id", RequestID(r.Context()), "method", r.Method,
					"route", rm.route, "status", rec.status, "bytes", rec.bytes, "ms", elapsed.Milliseconds(), "ip", a.clientIP(r))
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// The CORS headers' values, shared by every response (net/http only reads them; Header.Add would
// copy a slice that is full).
var (
	corsOrigin  = []string{"*"}
	corsMethods = []string{"GET, POST, PUT, DELETE, OPTIONS"}
	// The spec's three, plus Last-Event-ID for resuming the SSE sync stream from a browser.
	corsHeaders = []string{"X-Requested-With, Content-Type, Authorization, Last-Event-ID"}
)

// withCORS sends the spec's CORS headers on every response and answers preflight requests.
func withCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Access-Control-Allow-Origin"] = corsOrigin
		h["Access-Control-Allow-Methods"] = corsMethods
		h["Access-Control-Allow-Headers"] = corsHeaders
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withBodyLimit caps request bodies; reading past the cap makes decodeJSON answer M_TOO_LARGE.
// Media uploads are left to mediaapi, which has its own limit (media.max_upload_bytes).
func withBodyLimit(limit int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body == http.NoBody || isMediaUpload(r.URL.Path) { // NoBody: nothing to limit (GET)
				next.ServeHTTP(w, r)
				return
			}
			if r.ContentLength > limit {
				writeJSON(w, http.StatusRequestEntityTooLarge, spec.ErrTooLarge.Withf("Request body is larger than %d bytes", limit))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			next.ServeHTTP(w, r)
		})
	}
}

// isMediaUpload reports whether path is /_matrix/media/{version}/upload[/...].
func isMediaUpload(path string) bool {
	rest, ok := strings.CutPrefix(path, "/_matrix/media/")
	if !ok {
		return false
	}
	_, op, ok := strings.Cut(rest, "/")
	return ok && (op == "upload" || strings.HasPrefix(op, "upload/"))
}

// accessToken reads the bearer token from the Authorization header. Tokens in the query string are
// no longer supported by the spec (MSC4127) and are ignored.
func accessToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// requireAuth resolves the access token into the caller, or answers M_MISSING_TOKEN /
// M_UNKNOWN_TOKEN.
func (a *API) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := accessToken(r)
		if token == "" {
			writeJSON(w, http.StatusUnauthorized, spec.ErrMissingToken)
			return
		}
		caller, err := a.accounts.Authenticate(r.Context(), token)
		if err != nil {
			writeError(w, r, a.log, err)
			return
		}
		if ri, _ := r.Context().Value(keyRequestID).(*reqInfo); ri != nil {
			ri.caller = &caller
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyCaller, caller)))
	})
}

// clientIP is the peer address or, when the peer is a trusted proxy, the right-most address of
// X-Forwarded-For that is not itself a trusted proxy (left-most entries are whatever the client
// sent, so they cannot be believed).
func (a *API) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || !a.trustedProxy(ip) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := net.ParseIP(strings.TrimSpace(hops[i]))
		if hop == nil {
			break
		}
		if !a.trustedProxy(hop) {
			return hop.String()
		}
	}
	return host
}

func (a *API) trustedProxy(ip net.IP) bool {
	for _, n := range a.trustedProxies {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// metrics are the HTTP metrics, registered on the server's own registry.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	// routes holds each (method, route, status)'s counter and histogram once looked up: the
	// label lookups and chi's joining of the route's patterns into one string cost a long-poll
	// response ~2 % of its CPU.
	mu     sync.RWMutex
	routes map[routeKey]*routeMetrics
}

// routeKey names a request's route by chi's patterns as they are: most routes have one or two
// (the client API's prefix, then the endpoint); longer ones are joined.
type routeKey struct {
	method, p0, p1 string
	n, status      int
}

type routeMetrics struct {
	route    string
	requests prometheus.Counter
	duration prometheus.Observer
}

func (m *metrics) forRoute(method string, rc *chi.Context, status int) *routeMetrics {
	k := routeKey{method: method, status: status}
	if rc != nil {
		k.n = len(rc.RoutePatterns)
	}
	switch {
	case k.n == 1:
		k.p0 = rc.RoutePatterns[0]
	case k.n == 2:
		k.p0, k.p1 = rc.RoutePatterns[0], rc.RoutePatterns[1]
	case k.n > 2:
		k.p0 = rc.RoutePattern()
	}
	m.mu.RLock()
	rm := m.routes[k]
	m.mu.RUnlock()
	if rm != nil {
		return rm
	}
	route := "unmatched"
	if rc != nil && rc.RoutePattern() != "" {
		route = rc.RoutePattern()
	}
	rm = &routeMetrics{route: route,
		requests: m.requests.WithLabelValues(method, route, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(method, route)}
	m.mu.Lock()
	if len(m.routes) < 10000 { // methods and statuses are the client's choice: a bound
		m.routes[k] = rm
	}
	m.mu.Unlock()
	return rm
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "homeserver_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "homeserver_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "route"}),
		routes: map[routeKey]*routeMetrics{},
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}
