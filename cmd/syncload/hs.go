package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// hs is the homeserver under test. client is for requests that end (pooled keep-alive
// connections, one per concurrent request); streams is for SSE streams (a connection each, never
// reused) and ws for WebSocket handshakes.
type hs struct {
	base    string
	client  *http.Client
	streams *http.Client
	ws      *http.Client
	start   time.Time // the tool's clock: send times and arrival times are durations since it
}

func newHS(base string, conns int) *hs {
	return &hs{base: base, start: time.Now(),
		client: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // loopback: never through a proxy
			MaxIdleConns:        conns + 64,
			MaxIdleConnsPerHost: conns + 64,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		}},
		streams: &http.Client{Transport: &http.Transport{
			Proxy:              nil,
			MaxIdleConns:       -1, // a stream's connection is not reused
			DisableKeepAlives:  true,
			DisableCompression: true,
		}},
		ws: &http.Client{Transport: &http.Transport{Proxy: nil}},
	}
}

func (h *hs) close() {
	h.client.CloseIdleConnections()
	h.streams.CloseIdleConnections()
	h.ws.CloseIdleConnections()
}

// now is the tool's clock.
func (h *hs) now() time.Duration { return time.Since(h.start) }

type matrixError struct {
	status int
	body   string
}

func (e *matrixError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// do sends a request with an optional JSON body and returns the body of a 200 answer, and the
// time (on the tool's clock) at which it had been read completely.
func (h *hs) do(ctx context.Context, method, path, token string, body any) ([]byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	at := h.now()
	if err != nil {
		return nil, 0, err
	}
	if len(raw) > maxResponse {
		return nil, 0, fmt.Errorf("%s %s: response over %d bytes", method, path, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, &matrixError{status: resp.StatusCode, body: strings.TrimSpace(string(raw))}
	}
	return raw, at, nil
}

// maxResponse bounds what the tool reads of one response, SSE event or WebSocket message.
const maxResponse = 256 << 20

// call sends a JSON request and decodes a 200 answer into out (if not nil).
func (h *hs) call(ctx context.Context, method, path, token string, body, out any) error {
	raw, _, err := h.do(ctx, method, path, token, body)
	if err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// hello checks that a homeserver answers and returns its name and version (if it says).
func (h *hs) hello(ctx context.Context) (string, error) {
	var versions struct {
		Versions []string `json:"versions"`
	}
	if err := h.call(ctx, "GET", "/_matrix/client/versions", "", nil, &versions); err != nil || len(versions.Versions) == 0 {
		return "", fmt.Errorf("no homeserver at %s (GET /_matrix/client/versions: %v)", h.base, err)
	}
	var v struct {
		Server struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
	}
	if err := h.call(ctx, "GET", "/_matrix/federation/v1/version", "", nil, &v); err != nil || v.Server.Name == "" {
		return "unknown server", nil
	}
	return v.Server.Name + " " + v.Server.Version, nil
}

type user struct {
	userID, token string
}

func (h *hs) register(ctx context.Context, localpart string) (user, error) {
	body := map[string]any{"username": localpart, "password": "syncload password " + localpart,
		"initial_device_display_name": "syncload"}
	var challenge struct {
		Session string `json:"session"`
	}
	err := h.call(ctx, "POST", "/_matrix/client/v3/register", "", body, nil)
	var me *matrixError
	if !errors.As(err, &me) || me.status != http.StatusUnauthorized {
		return user{}, fmt.Errorf("register %s: expected a 401 UIA challenge, got %v", localpart, err)
	}
	if err := json.Unmarshal([]byte(me.body), &challenge); err != nil || challenge.Session == "" {
		return user{}, fmt.Errorf("register %s: no UIA session in %s", localpart, me.body)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": challenge.Session}
	var res struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if err := h.call(ctx, "POST", "/_matrix/client/v3/register", "", body, &res); err != nil {
		return user{}, fmt.Errorf("register %s (open registration on, rate limits off?): %w", localpart, err)
	}
	return user{userID: res.UserID, token: res.AccessToken}, nil
}

func (h *hs) createRoom(ctx context.Context, u user, name string) (string, error) {
	var created struct {
		RoomID string `json:"room_id"`
	}
	err := h.call(ctx, "POST", "/_matrix/client/v3/createRoom", u.token,
		map[string]any{"preset": "public_chat", "name": name}, &created)
	if err != nil {
		return "", fmt.Errorf("createRoom: %w", err)
	}
	return created.RoomID, nil
}

func (h *hs) join(ctx context.Context, u user, roomID string) error {
	if err := h.call(ctx, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", u.token,
		map[string]any{}, nil); err != nil {
		return fmt.Errorf("join %s to %s: %w", u.userID, roomID, err)
	}
	return nil
}

func (h *hs) uploadFilter(ctx context.Context, u user, filter any) (string, error) {
	var f struct {
		FilterID string `json:"filter_id"`
	}
	if err := h.call(ctx, "POST", "/_matrix/client/v3/user/"+url.PathEscape(u.userID)+"/filter", u.token,
		filter, &f); err != nil {
		return "", fmt.Errorf("upload filter for %s: %w", u.userID, err)
	}
	return f.FilterID, nil
}

// syncResponse holds the parts of a /sync answer the tool reads (decodeSync fills it).
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]syncRoom `json:"join"`
	} `json:"rooms"`
}

// syncRoom is a joined room of a sync response.
type syncRoom struct {
	Timeline struct {
		Events  []syncEvent `json:"events"`
		Limited bool        `json:"limited"`
	} `json:"timeline"`
}

// syncEvent is a timeline event of a sync response.
type syncEvent struct {
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

// syncQuery is the query string of a /sync (or stream) request.
func syncQuery(filter, since string, timeout time.Duration, setPresence string) string {
	return string(appendSyncQuery(nil, filter, since, timeout, setPresence))
}

// appendSyncQuery appends the query of a GET /sync to dst: what url.Values.Encode gives for the
// parameters that are set (the same order, the same escaping), without a map per request.
func appendSyncQuery(dst []byte, filter, since string, timeout time.Duration, setPresence string) []byte {
	n := len(dst)
	param := func(key, value string) {
		if len(dst) > n {
			dst = append(dst, '&')
		}
		dst = append(dst, key...)
		dst = append(dst, '=')
		dst = append(dst, url.QueryEscape(value)...)
	}
	if filter != "" {
		param("filter", filter)
	}
	if setPresence != "" {
		param("set_presence", setPresence)
	}
	if since != "" {
		param("since", since)
	}
	if timeout >= 0 {
		if len(dst) > n {
			dst = append(dst, '&')
		}
		dst = append(dst, "timeout="...)
		dst = strconv.AppendInt(dst, timeout.Milliseconds(), 10)
	}
	return dst
}

// sync is one GET /sync; it returns the raw body and when it had been read.
func (h *hs) sync(ctx context.Context, token, since, filter string, timeout time.Duration, setPresence string) ([]byte, time.Duration, error) {
	// The server answers after `timeout` at the latest; allow it some slack before giving up.
	ctx, cancel := context.WithTimeout(ctx, max(timeout, 0)+60*time.Second)
	defer cancel()
	return h.do(ctx, "GET", "/_matrix/client/v3/sync?"+syncQuery(filter, since, timeout, setPresence), token, nil)
}

// parallel runs fn(i) for i in [0, n) on `workers` goroutines; the first error stops the rest.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// pct is the p-quantile of sorted durations (p=1: the maximum).
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// quantiles formats p50/p95/p99/max of sorted durations.
func quantiles(sorted []time.Duration) string {
	return fmt.Sprintf("p50 %s p95 %s p99 %s max %s",
		ms(pct(sorted, 0.50)), ms(pct(sorted, 0.95)), ms(pct(sorted, 0.99)), ms(pct(sorted, 1)))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

// toolCPU is the CPU time (user + system) this process has used.
func toolCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the CPU time all processes of the machine have used (busy time in /proc/stat,
// Linux only; ok false elsewhere). With the server's and the tool's own, it shows how much other
// processes (a database server, other work) used during a measurement.
func machineCPU() (busy time.Duration, ok bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 { // idle, iowait; steal, guest (guest is in user already)
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, true // USER_HZ is 100 on Linux
}
