package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
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
