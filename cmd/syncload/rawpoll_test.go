package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestPollConn: the long-poll client reads Content-Length and chunked bodies, sends the token,
// keeps its connection across polls, reports other statuses as matrix errors, and reconnects
// after the server closes.
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
		body, _, err := p.get(ctx, h, "/sync?"+c.query, "tok")
		if err != nil || string(body) != c.want {
			t.Fatalf("%s: %d bytes, %v", c.query, len(body), err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three polls, want 1", n)
	}
	if body, _, err := p.get(ctx, h, "/sync?kind=close", "tok"); err != nil || string(body) != `{"closed":true}` {
		t.Fatalf("close: %s, %v", body, err)
	}
	if _, _, err := p.get(ctx, h, "/sync?kind=len", "tok"); err != nil {
		t.Fatalf("after the server closed: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a new one after Connection: close)", n)
	}
	_, _, err = p.get(ctx, h, "/sync", "wrong")
	var me *matrixError
	if !errors.As(err, &me) || me.status != 401 || !strings.Contains(me.body, "M_UNKNOWN_TOKEN") {
		t.Fatalf("refused token: %v", err)
	}
}
