package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollConn: the long-poll client reads Content-Length and chunked bodies, sends the token,
// keeps its connection across polls, reports other statuses as matrix errors, and reconnects
// after the server closes; a PUT carries its JSON body on the same connection.
func TestPollConn(t *testing.T) {
	var conns atomic.Int64
	big := strings.Repeat("x", 100_000)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN"}`))
			return
		}
		switch r.URL.Query().Get("kind") {
		case "echo": // the method, the body's type and the body
			b, _ := io.ReadAll(r.Body)
			w.Write([]byte(r.Method + " " + r.Header.Get("Content-Type") + " " + string(b)))
		case "chunked":
			w.Write([]byte(`{"a":"`))
			w.(http.Flusher).Flush() // no Content-Length now: chunked
			w.Write([]byte(big + `"}`))
		case "close":
			w.Header().Set("Connection", "close")
			w.Write([]byte(`{"closed":true}`))
		default:
			w.Header().Set("Content-Length", "11")
			w.Write([]byte(`{"n":"len"}`))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	h := newHS(srv.URL, 1)
	p, err := newPollConn(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct{ query, want string }{
		{"kind=len", `{"n":"len"}`},
		{"kind=chunked", `{"a":"` + big + `"}`},
		{"kind=len", `{"n":"len"}`},
	} {
		body, _, err := p.get(ctx, h, []byte("/sync?"+c.query), "tok", 0)
		if err != nil || string(body) != c.want {
			t.Fatalf("%s: %d bytes, %v", c.query, len(body), err)
		}
	}
	body, _, err := p.do(ctx, h, "PUT", []byte("/send?kind=echo"), "tok", []byte(`{"body":"hi"}`), 0)
	if want := `PUT application/json {"body":"hi"}`; err != nil || string(body) != want {
		t.Fatalf("PUT: %q, %v; want %q", body, err, want)
	}
	if body, _, err := p.get(ctx, h, []byte("/sync?kind=echo"), "tok", 0); err != nil || string(body) != "GET  " {
		t.Fatalf("GET after PUT: %q, %v", body, err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for five requests, want 1", n)
	}
	if body, _, err := p.get(ctx, h, []byte("/sync?kind=close"), "tok", 0); err != nil || string(body) != `{"closed":true}` {
		t.Fatalf("close: %s, %v", body, err)
	}
	if _, _, err := p.get(ctx, h, []byte("/sync?kind=len"), "tok", 0); err != nil {
		t.Fatalf("after the server closed: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a new one after Connection: close)", n)
	}
	_, _, err = p.get(ctx, h, []byte("/sync"), "wrong", 0)
	var me *matrixError
	if !errors.As(err, &me) || me.status != 401 || !strings.Contains(me.body, "M_UNKNOWN_TOKEN") {
		t.Fatalf("refused token: %v", err)
	}
}

// TestPollConnLimits: a poll that outlives its limit fails, one whose context ends returns the
// context's error at once, and the next poll works on a new connection.
func TestPollConnLimits(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hang") != "" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	defer close(release)
	h := newHS(srv.URL, 1)
	p, err := newPollConn(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	if _, _, err := p.get(ctx, h, []byte("/sync?hang=1"), "tok", 100*time.Millisecond); err == nil {
		t.Fatal("a poll past its limit succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the limit of 100ms ended the poll after %s", d)
	}
	if body, _, err := p.get(ctx, h, []byte("/sync"), "tok", time.Second); err != nil || string(body) != `{}` {
		t.Fatalf("after a timed-out poll: %q, %v", body, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, _, err := p.get(cctx, h, []byte("/sync?hang=1"), "tok", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("poll whose context ended: %v, want context.Canceled", err)
	}
	if body, _, err := p.get(ctx, h, []byte("/sync"), "tok", 0); err != nil || string(body) != `{}` {
		t.Fatalf("after a cancelled poll: %q, %v", body, err)
	}
}

// TestAppendSyncQuery: the query is what url.Values.Encode gives, appended after what is there.
func TestAppendSyncQuery(t *testing.T) {
	for _, c := range []struct {
		filter, since, presence string
		timeout                 time.Duration
	}{
		{"", "", "", -1},
		{"12", "s9_0_0_0_1795433629359_0_2", "", 30 * time.Second},
		{`{"room":{"timeline":{"limit":50}}}`, "s1 &=+", "unavailable", 0},
		{"", "s2", "offline", -1},
	} {
		q := url.Values{}
		if c.filter != "" {
			q.Set("filter", c.filter)
		}
		if c.since != "" {
			q.Set("since", c.since)
		}
		if c.timeout >= 0 {
			q.Set("timeout", strconv.FormatInt(c.timeout.Milliseconds(), 10))
		}
		if c.presence != "" {
			q.Set("set_presence", c.presence)
		}
		if got, want := string(appendSyncQuery([]byte("/sync?"), c.filter, c.since, c.timeout, c.presence)), "/sync?"+q.Encode(); got != want {
			t.Errorf("appendSyncQuery = %q, want %q", got, want)
		}
	}
}
