package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestReadSSE(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than the reader's buffer
	stream := ": keep-alive\n\n" +
		"id: s1_2\nevent: sync\ndata: {\"next_batch\":\"s1_2\"}\n\n" +
		"id: s3\r\nevent: sync\r\ndata: a\r\ndata:b\r\n\r\n" + // CRLF, two data lines, no space after the colon
		"data: " + long + "\n\n" +
		"id: only-an-id\n\n" + // no data: not dispatched
		"event: error\ndata: {\"errcode\":\"M_UNKNOWN_TOKEN\"}\n\n" +
		"id: cut\ndata: never finished"
	var got []sseEvent
	comments := 0
	err := readSSE(strings.NewReader(stream), &hs{start: time.Now()}, func(_ time.Duration, ev sseEvent) error {
		ev.data = append([]byte(nil), ev.data...)
		got = append(got, ev)
		return nil
	}, func() { comments++ })
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want EOF", err)
	}
	if comments != 1 {
		t.Errorf("comments = %d, want 1", comments)
	}
	want := []sseEvent{
		{id: "s1_2", hasID: true, event: "sync", data: []byte(`{"next_batch":"s1_2"}`)},
		{id: "s3", hasID: true, event: "sync", data: []byte("a\nb")},
		{event: "message", data: []byte(long)},
		{event: "error", data: []byte(`{"errcode":"M_UNKNOWN_TOKEN"}`)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.id != w.id || g.hasID != w.hasID || g.event != w.event || string(g.data) != string(w.data) {
			t.Errorf("event %d = {%q %t %q %.40q}, want {%q %t %q %.40q}", i, g.id, g.hasID, g.event, g.data, w.id, w.hasID, w.event, w.data)
		}
	}
}

func TestParseBody(t *testing.T) {
	seq, at, ok := parseBody("syncload abc #17 sent=123456", "syncload abc #")
	if !ok || seq != 17 || at != 123456 {
		t.Errorf("parseBody = %d %d %t", seq, at, ok)
	}
	for _, b := range []string{"syncload other #1 sent=1", "syncload abc #x sent=1", "syncload abc #1", "hello"} {
		if _, _, ok := parseBody(b, "syncload abc #"); ok {
			t.Errorf("parseBody(%q) accepted", b)
		}
	}
}

func TestSlowest(t *testing.T) {
	ms := time.Millisecond
	lastAt := []time.Duration{5 * ms, 90 * ms, 0, 40 * ms, 90 * ms, 10 * ms}
	sent := []bool{true, true, false, true, true, true}
	if got, want := slowest(lastAt, sent, 3), "1: 90.0 ms, 4: 90.0 ms, 3: 40.0 ms"; got != want {
		t.Errorf("slowest = %q, want %q", got, want)
	}
	if got, want := slowest(lastAt[:1], sent[:1], 5), "0: 5.0 ms"; got != want {
		t.Errorf("slowest of one = %q, want %q", got, want)
	}
	if got := slowest(nil, nil, 5); got != "" {
		t.Errorf("slowest of nothing = %q", got)
	}
}

func TestPct(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 51}, {0.95, 96}, {0.99, 100}, {1, 100}} {
		if got := pct(d, c.p); got != c.want {
			t.Errorf("pct(%g) = %d, want %d", c.p, got, c.want)
		}
	}
	if pct(nil, 0.5) != 0 {
		t.Error("pct of nothing")
	}
}

func TestCheck(t *testing.T) {
	ok := config{scenario: "fanout", transport: "ws", forceGC: "auto", base: "http://127.0.0.1:8008/", receivers: 10, messages: 10,
		rate: 1, timelineLimit: 10, setupWorkers: 1, connWorkers: 1, initialConc: 1, pollTimeout: time.Second,
		users: 1, rooms: 1, samples: 1, sampleInterval: time.Second, maxDuration: time.Minute}
	c := ok
	if err := c.check(); err != nil || c.metrics != "http://127.0.0.1:8008/metrics" {
		t.Fatalf("check = %v, metrics %q", err, c.metrics)
	}
	for name, mutate := range map[string]func(*config){
		"remote base":    func(c *config) { c.base = "http://example.org" },
		"remote metrics": func(c *config) { c.metrics = "http://10.0.0.1:9090/metrics" },
		"transport":      func(c *config) { c.transport = "carrier-pigeon" },
		"scenario":       func(c *config) { c.scenario = "soak" },
		"receivers":      func(c *config) { c.receivers = maxReceivers + 1 },
		"initial size":   func(c *config) { c.rooms, c.roomMessages = 10000, 1000 },
	} {
		c := ok
		mutate(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// fakeStream serves the SSE and WebSocket endpoints with canned sync responses: two from since
// "s0" (the second one's id or next_batch wrong), then it ends the stream; from "s2" it sends
// nothing more and waits.
func fakeStream(t *testing.T) *httptest.Server {
	body := func(nb, msg string) string {
		return `{"next_batch":"` + nb + `","rooms":{"join":{"!r":{"timeline":{"events":[{"type":"m.room.message","sender":"@s","content":{"body":"` + msg + `"}}]}}}}}`
	}
	mux := http.NewServeMux()
	mux.HandleFunc(streamPrefix+"/sync/sse", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		since := r.URL.Query().Get("since")
		if id := r.Header.Get("Last-Event-ID"); id != "" {
			since = id
		}
		w.Header().Set("Content-Type", "text/event-stream")
		if since == "s0" {
			io.WriteString(w, ": keep-alive\n\nid: s1\nevent: sync\ndata: "+body("s1", "m1")+"\n\n")
			io.WriteString(w, "id: wrong\nevent: sync\ndata: "+body("s2", "m2")+"\n\n")
			return
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc(streamPrefix+"/sync/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		if r.URL.Query().Get("since") == "s0" {
			c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"sync","next_batch":"s1","body":`+body("s1", "m1")+`}`))
			c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"sync","next_batch":"wrong","body":`+body("s2", "m2")+`}`))
			c.Close(4002, "too slow")
			return
		}
		c.Read(r.Context())
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestTransports(t *testing.T) {
	srv := fakeStream(t)
	for _, transport := range []string{"sse", "ws"} {
		t.Run(transport, func(t *testing.T) {
			c := config{}
			h := newHS(srv.URL, 1)
			defer h.close()
			rd := &reader{h: h, c: &c, transport: transport, connSem: make(chan struct{}, 1)}
			r := &receiver{user: user{userID: "@r", token: "tok"}, since: "s0"}
			var got []string
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() {
				done <- rd.run(ctx, r, nil, func(r *receiver, _ time.Duration, s *syncResponse) {
					for _, ev := range s.Rooms.Join["!r"].Timeline.Events {
						got = append(got, ev.Content.Body)
					}
					if len(got) == 2 {
						go func() { time.Sleep(100 * time.Millisecond); cancel() }()
					}
				})
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				cancel()
				t.Fatal("receiver did not finish")
			}
			if strings.Join(got, ",") != "m1,m2" || r.since != "s2" || r.protocol != 1 || r.reconnects != 1 || r.responses != 2 {
				t.Errorf("got %v, since %q, protocol %d, reconnects %d, responses %d (last error %s)",
					got, r.since, r.protocol, r.reconnects, r.responses, r.lastErr)
			}
			if transport == "ws" && r.tooSlow != 1 {
				t.Errorf("tooSlow = %d", r.tooSlow)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		for _, transport := range []string{"sse", "ws"} {
			rd := &reader{h: newHS(srv.URL, 1), c: &config{}, transport: transport, connSem: make(chan struct{}, 1)}
			r := &receiver{user: user{token: "bad"}, since: "s0"}
			var fe fatalError
			if err := rd.run(context.Background(), r, nil, nil); !errors.As(err, &fe) {
				t.Errorf("%s: run with a refused token = %v, want a fatalError", transport, err)
			}
		}
	})
}
