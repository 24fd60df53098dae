package clientapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/clientapi"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

const streamAPI = "/_matrix/client/unstable/dev.hearth"

// sseItem is one event or comment of an SSE stream.
type sseItem struct {
	ID, Event, Data string
	Comment         string
}

// sseStream is an open SSE connection read by a goroutine.
type sseStream struct {
	resp   *http.Response
	items  chan sseItem
	cancel context.CancelFunc
}

// openSSE opens the SSE sync stream; header may add Last-Event-ID. Close it with close().
func openSSE(t *testing.T, s *servertest.Server, token, query string, header map[string]string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", s.URL+streamAPI+"/sync/sse?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("sse: status %d", resp.StatusCode)
	}
	st := &sseStream{resp: resp, items: make(chan sseItem, 1024), cancel: cancel}
	go func() {
		defer close(st.items)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var it sseItem
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if it != (sseItem{}) {
					st.items <- it
				}
				it = sseItem{}
			case strings.HasPrefix(line, ":"):
				it.Comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				it.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				it.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				if it.Data != "" {
					t.Errorf("sse: data on several lines")
				}
				it.Data = line[6:]
			default:
				t.Errorf("sse: unexpected line %q", line)
			}
		}
	}()
	t.Cleanup(st.close)
	return st
}

func (st *sseStream) close() {
	st.cancel()
	st.resp.Body.Close()
}

// nextEvent returns the next event (skipping comments), failing after 10 s.
func (st *sseStream) nextEvent(t *testing.T) sseItem {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case it, ok := <-st.items:
			if !ok {
				t.Fatal("sse: stream ended")
			}
			if it.Event != "" {
				return it
			}
		case <-timeout:
			t.Fatal("sse: no event within 10s")
		}
	}
}

// syncBody is the part of a sync response the transport tests look at.
type syncBody struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					EventID string `json:"event_id"`
					Type    string `json:"type"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

func parseSync(t *testing.T, data []byte) syncBody {
	t.Helper()
	var b syncBody
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("sync body: %v: %.300s", err, data)
	}
	return b
}

// texts are the bodies of the room's m.room.message timeline events, in order.
func (b syncBody) texts(roomID string) []string {
	var out []string
	for _, e := range b.Rooms.Join[roomID].Timeline.Events {
		if e.Type == "m.room.message" {
			out = append(out, e.Content.Body)
		}
	}
	return out
}

// sharedRoom is a public room of alice that bob joined.
func sharedRoom(t *testing.T, s *servertest.Server) (alice, bob servertest.User, roomID string) {
	t.Helper()
	alice = s.Register(t, "alice", "password-alice")
	bob = s.Register(t, "bob", "password-bob")
	roomID = newRoom(t, s, alice, map[string]any{"preset": "public_chat"})
	mustJoin(t, s, bob, roomID)
	return alice, bob, roomID
}

// TestSyncSSE: each sync response is one event whose id is its next_batch; a reconnection with
// Last-Event-ID (which wins over since) gets exactly what was missed, as /sync from that token does.
func TestSyncSSE(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := sharedRoom(t, s)

		res := s.Do(t, "GET", streamAPI+"/sync/sse", "", nil)
		want(t, "no token", res, http.StatusUnauthorized, "M_MISSING_TOKEN")
		res = s.Do(t, "GET", streamAPI+"/sync/sse?filter=999", bob.AccessToken, nil)
		want(t, "unknown filter", res, http.StatusBadRequest, "M_INVALID_PARAM")
		res = s.Do(t, "GET", streamAPI+"/sync/sse?since=nonsense", bob.AccessToken, nil)
		want(t, "bad since", res, http.StatusBadRequest, "M_INVALID_PARAM")

		st := openSSE(t, s, bob.AccessToken, "", nil)
		for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
			if got := st.resp.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
		initial := st.nextEvent(t)
		if initial.Event != "sync" || initial.ID == "" || parseSync(t, []byte(initial.Data)).NextBatch != initial.ID {
			t.Fatalf("initial event: %+v", initial)
		}

		sendText(t, s, alice, roomID, "one")
		ev := st.nextEvent(t)
		body := parseSync(t, []byte(ev.Data))
		if ev.ID != body.NextBatch || fmt.Sprint(body.texts(roomID)) != "[one]" {
			t.Fatalf("after one: id %q, body %s", ev.ID, ev.Data)
		}
		st.close()

		sendText(t, s, alice, roomID, "two")
		sendText(t, s, alice, roomID, "three")
		st = openSSE(t, s, bob.AccessToken, "since="+initial.ID, map[string]string{"Last-Event-ID": ev.ID})
		resumed := st.nextEvent(t)
		got := parseSync(t, []byte(resumed.Data))
		if resumed.ID != got.NextBatch || fmt.Sprint(got.texts(roomID)) != "[two three]" {
			t.Fatalf("resumed: id %q, body %s", resumed.ID, resumed.Data)
		}
		// The same as /sync from the same token.
		res = s.Do(t, "GET", csAPI+"/sync?since="+ev.ID, bob.AccessToken, nil)
		want(t, "sync", res, http.StatusOK, "")
		if fmt.Sprint(parseSync(t, res.Raw).texts(roomID)) != "[two three]" {
			t.Fatalf("/sync from the same token: %s", res.Raw)
		}
		sendText(t, s, alice, roomID, "four")
		if ev := st.nextEvent(t); fmt.Sprint(parseSync(t, []byte(ev.Data)).texts(roomID)) != "[four]" {
			t.Fatalf("after four: %s", ev.Data)
		}
	})
}

// TestSyncSSEKeepAlive: a quiet stream gets keep-alive comments, and outlives the server's
// read_timeout.
func TestSyncSSEKeepAlive(t *testing.T) {
	clientapi.SetSSEKeepAlive(t, 50*time.Millisecond)
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		bob := s.Register(t, "bob", "password-bob")
		since := s.Do(t, "GET", csAPI+"/sync", bob.AccessToken, nil).Str("next_batch")
		st := openSSE(t, s, bob.AccessToken, "since="+since, nil)
		start := time.Now()
		n := 0
		for time.Since(start) < 1500*time.Millisecond || n < 3 {
			select {
			case it, ok := <-st.items:
				if !ok {
					t.Fatalf("stream ended after %v", time.Since(start))
				}
				if it.Event != "" || it.Comment != "keep-alive" {
					t.Fatalf("unexpected item on a quiet stream: %+v", it)
				}
				n++
			case <-time.After(5 * time.Second):
				t.Fatal("no keep-alive within 5s")
			}
		}
	}, func(c *config.Config) { c.HTTP.ReadTimeout = config.Duration(time.Second) })
}

// TestSyncSSEClientGone: when the client disconnects, the parked poll and the handler end.
func TestSyncSSEClientGone(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		bob := s.Register(t, "bob", "password-bob")
		since := s.Do(t, "GET", csAPI+"/sync", bob.AccessToken, nil).Str("next_batch")
		st := openSSE(t, s, bob.AccessToken, "since="+since, nil)
		checkFor(t, 10*time.Second, func() bool { return s.Sync.Waiting() == 1 })
		st.close()
		checkFor(t, 10*time.Second, func() bool { return s.Sync.Waiting() == 0 })
		// The handler returned: the request is counted (the metrics middleware counts on return).
		done := `homeserver_http_requests_total{method="GET",route="` + streamAPI + `/sync/sse",status="200"} 1`
		checkFor(t, 10*time.Second, func() bool {
			return strings.Contains(string(s.Do(t, "GET", "/metrics", "", nil).Raw), done)
		})
	})
}

// checkFor polls cond until it holds, failing after total.
func checkFor(t *testing.T, total time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSyncStreamsEndOnShutdown: StopStreams (called when the server shuts down) ends an open SSE
// stream at once instead of holding the shutdown for its whole grace period.
func TestSyncStreamsEndOnShutdown(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	alice := s.Register(t, "alice", "alice password")
	req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/unstable/dev.hearth/sync/sse", nil)
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		done <- err
	}()
	s.API().StopStreams()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the SSE stream did not end after StopStreams")
	}
}

// TestSyncSSESlowClientDropped: a client that stops reading does not hold its stream forever:
// once a write has been blocked for the write timeout the handler ends (the client resumes from
// its last id).
func TestSyncSSESlowClientDropped(t *testing.T) {
	clientapi.SetSSEWriteTimeout(t, 300*time.Millisecond)
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := sharedRoom(t, s)
		since := s.Do(t, "GET", csAPI+"/sync", bob.AccessToken, nil).Str("next_batch")
		// Bob opens the stream and reads nothing more than the response headers.
		req, err := http.NewRequest("GET", s.URL+streamAPI+"/sync/sse?since="+since, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		done := `homeserver_http_requests_total{method="GET",route="` + streamAPI + `/sync/sse",status="200"} 1`
		ended := func() bool { return strings.Contains(string(s.Do(t, "GET", "/metrics", "", nil).Raw), done) }
		// Alice sends until the socket buffers (a few MB on loopback) are full and a write blocks.
		pad := strings.Repeat("x", 32<<10)
		for i := 0; !ended(); i++ {
			if i == 2000 {
				t.Fatal("the handler still runs: the stream of a client that reads nothing was never dropped")
			}
			sendText(t, s, alice, roomID, fmt.Sprintf("m%d %s", i, pad))
		}
	})
}

// TestSyncSSEParametersKept: the parameters of the stream apply to every event, not only the
// first (an inline filter), and full_state only to the first.
func TestSyncSSEParametersKept(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice, bob, roomID := sharedRoom(t, s)
		since := s.Do(t, "GET", csAPI+"/sync", bob.AccessToken, nil).Str("next_batch")
		filter := `{"room":{"timeline":{"types":["m.room.message"]}}}`
		st := openSSE(t, s, bob.AccessToken, "full_state=true&since="+since+"&filter="+url.QueryEscape(filter), nil)
		first := st.nextEvent(t)
		if !strings.Contains(first.Data, `"m.room.create"`) {
			t.Fatalf("full_state: the first event has no room state: %.300s", first.Data)
		}
		res := s.Do(t, "PUT", roomPath(roomID, "/send/org.example.other/t1"), alice.AccessToken, map[string]any{"n": 1})
		want(t, "send other", res, http.StatusOK, "")
		sendText(t, s, alice, roomID, "hello")
		var got []string
		for len(got) == 0 {
			ev := st.nextEvent(t)
			if strings.Contains(ev.Data, "org.example.other") || strings.Contains(ev.Data, `"m.room.create"`) {
				t.Fatalf("a later event is not filtered, or has the full state again: %.500s", ev.Data)
			}
			got = parseSync(t, []byte(ev.Data)).texts(roomID)
		}
		if fmt.Sprint(got) != "[hello]" {
			t.Fatalf("texts %v", got)
		}
	})
}
