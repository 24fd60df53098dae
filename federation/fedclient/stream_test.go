package fedclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/netguard"
)

// TestStream: streamed answers are not bounded by the response size limit nor, once the
// headers are in, by the request timeout; errors are *Error as with Do; StreamUnsigned sends no
// signature.
func TestStream(t *testing.T) {
	n := newTestNet(t)
	key := newKey(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	n.serve("s", "127.0.0.21", 8448, "127.0.0.21", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write(big)
		case "/slow-body":
			_, _ = io.WriteString(w, "first ")
			w.(http.Flusher).Flush()
			time.Sleep(600 * time.Millisecond)
			_, _ = io.WriteString(w, "second")
		case "/slow-headers":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		case "/missing":
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"no such thing"}`)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	c := n.client(key, func(o *fedclient.Options) { o.MaxResponseBytes = 1 << 20; o.Timeout = 300 * time.Millisecond })
	ctx := context.Background()
	read := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	if got := read(c.Stream(ctx, "127.0.0.21", "GET", "/big", nil)); got != string(big) {
		t.Fatalf("3 MiB streamed with a 1 MiB Do limit: %d bytes", len(got))
	}
	if _, err := c.Do(ctx, "127.0.0.21", "GET", "/big", nil); !errors.Is(err, fedclient.ErrTooLarge) {
		t.Fatalf("Do of 3 MiB: %v", err) // the limit still holds for Do
	}
	if s := n.last("s"); !strings.HasPrefix(s.auth, "X-Matrix ") {
		t.Fatalf("Stream sent Authorization %q", s.auth)
	}
	if got := read(c.Stream(ctx, "127.0.0.21", "GET", "/slow-body", nil)); got != "first second" {
		t.Fatalf("body slower than the timeout: %q", got)
	}
	start := time.Now()
	if _, err := c.Stream(ctx, "127.0.0.21", "GET", "/slow-headers", nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("headers slower than the timeout: %v after %v", err, time.Since(start))
	}
	var fe *fedclient.Error
	if _, err := c.Stream(ctx, "127.0.0.21", "GET", "/missing", nil); !errors.As(err, &fe) || fe.Status != 404 || fe.Code != "M_NOT_FOUND" {
		t.Fatalf("404: %v", err)
	}
	if got := read(c.StreamUnsigned(ctx, "127.0.0.21", "/plain?x=1")); got != "ok" {
		t.Fatalf("unsigned: %q", got)
	}
	if s := n.last("s"); s.auth != "" || s.uri != "/plain?x=1" {
		t.Fatalf("StreamUnsigned sent Authorization %q, URI %q", s.auth, s.uri)
	}
	// The caller's context still bounds the body.
	cctx, cancel := context.WithCancel(ctx)
	resp, err := c.Stream(cctx, "127.0.0.21", "GET", "/slow-body", nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("body read on after the context was cancelled")
	}
	resp.Body.Close()
}

// TestFetchURL: a URL another server points to is fetched unsigned, through the guard, with the
// certificate verified, following at most 5 https redirects.
func TestFetchURL(t *testing.T) {
	n := newTestNet(t)
	key := newKey(t)
	n.hosts["cdn.test"] = []netip.Addr{netip.MustParseAddr("127.0.0.22")}
	n.serve("cdn", "127.0.0.22", 443, "cdn.test", func(w http.ResponseWriter, r *http.Request) {
		if hop, ok := strings.CutPrefix(r.URL.Path, "/hop/"); ok {
			k, _ := strconv.Atoi(hop)
			next := "/file"
			if k > 1 {
				next = fmt.Sprintf("/hop/%d", k-1)
			}
			http.Redirect(w, r, next, http.StatusFound)
			return
		}
		switch r.URL.Path {
		case "/to-http":
			http.Redirect(w, r, "http://cdn.test/file", http.StatusFound)
		case "/file":
			w.Header().Set("Content-Type", "image/png")
			_, _ = io.WriteString(w, "content")
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	})
	// other.test presents cdn.test's certificate.
	n.hosts["other.test"] = []netip.Addr{netip.MustParseAddr("127.0.0.22")}
	c := n.client(key)
	ctx := context.Background()

	for _, path := range []string{"/file", "/hop/5"} {
		resp, err := c.FetchURL(ctx, "https://cdn.test"+path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(data) != "content" || resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("%s: %q %q", path, data, resp.Header.Get("Content-Type"))
		}
		if s := n.last("cdn"); s.auth != "" {
			t.Fatalf("%s: sent Authorization %q", path, s.auth)
		}
	}
	var fe *fedclient.Error
	if _, err := c.FetchURL(ctx, "https://cdn.test/denied"); !errors.As(err, &fe) || fe.Status != 403 || fe.Destination != "cdn.test" {
		t.Fatalf("403: %v", err)
	}
	for _, bad := range []string{"https://cdn.test/hop/6", "https://cdn.test/to-http", "http://cdn.test/file", "ftp://cdn.test/file",
		"https:///file", "https://other.test/file"} {
		if resp, err := c.FetchURL(ctx, bad); err == nil {
			resp.Body.Close()
			t.Errorf("%s fetched", bad)
		}
	}
	strict := n.client(key, func(o *fedclient.Options) { o.Guard = nil })
	if _, err := strict.FetchURL(ctx, "https://cdn.test/file"); !errors.Is(err, netguard.ErrForbidden) {
		t.Fatalf("loopback URL with the default guard: %v", err)
	}
}
