package clientapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// BenchmarkSyncTransports is cmd/syncload's fan-out inside one process, over real HTTP on
// loopback: receivers read one public room over long poll, SSE or the WebSocket; each op sends one
// message and waits until every receiver has read a response holding it. Besides the wall time it
// reports the process's CPU time per response, which other work on the machine changes much less.
// That CPU includes the benchmark's own clients, kept minimal (they find next_batch and count
// message events in the raw bytes, decoding nothing), so the figure compares server changes but is
// not the server's alone.
//
//	go test ./clientapi -run '^$' -bench 'SyncTransports/sqlite/sse/1000$' -benchtime 100x
//
// -synctransports.cpuprofile FILE profiles the timed part only.
func BenchmarkSyncTransports(b *testing.B) {
	for _, backend := range storagetest.Backends {
		for _, tr := range []string{"longpoll", "sse", "ws"} {
			for _, n := range []int{100, 1000} {
				b.Run(fmt.Sprintf("%s/%s/%d", backend, tr, n), func(b *testing.B) { benchSyncTransport(b, backend, tr, n) })
			}
		}
	}
}

var syncTransportsProfile = flag.String("synctransports.cpuprofile", "", "BenchmarkSyncTransports: write a CPU profile of the timed part to this file")

func benchSyncTransport(b *testing.B, backend, transport string, receivers int) {
	s := servertest.Start(b, backend)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice := room.Sender{UserID: "@alice:localhost", Localpart: "alice", DeviceID: "ALICE"}
	roomID, err := s.Rooms.CreateRoom(ctx, room.CreateRequest{Creator: alice.UserID, Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	// Accounts without passwords (no hashing), joined through the room service; everyone starts
	// from the token of one initial sync (a token is positions only).
	type rcv struct{ token, filter string }
	rs := make([]rcv, receivers)
	for i := range rs {
		lp := fmt.Sprintf("r%d", i)
		toks, err := s.Accounts.Register(ctx, account.RegisterParams{Localpart: lp})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Rooms.Join(ctx, roomID, room.Sender{UserID: string(toks.UserID), Localpart: lp, DeviceID: toks.DeviceID},
			room.MemberProfile{}, ""); err != nil {
			b.Fatal(err)
		}
		f, err := s.Accounts.CreateFilter(ctx, lp, []byte(`{"room":{"timeline":{"limit":50}}}`))
		if err != nil {
			b.Fatal(err)
		}
		rs[i] = rcv{token: toks.AccessToken, filter: f}
	}
	first, err := s.Sync.Sync(ctx, hsync.Request{UserID: "@r0:localhost", Localpart: "r0", DeviceID: "D"})
	if err != nil {
		b.Fatal(err)
	}

	got := make(chan int, receivers)
	errs := make(chan error, receivers)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: receivers + 10, DisableCompression: true}}
	defer client.CloseIdleConnections()
	for _, r := range rs {
		q := url.Values{"filter": {r.filter}, "since": {first.NextBatch}}
		var run func(ctx context.Context, client *http.Client, base, token string, q url.Values, got chan<- int) error
		switch transport {
		case "longpoll":
			run = benchLongPoll
		case "sse":
			run = benchSSE
		case "ws":
			run = benchWS
		}
		go func() {
			if err := run(ctx, client, s.URL, r.token, q, got); err != nil && ctx.Err() == nil {
				errs <- err
			}
		}()
	}
	body := json.RawMessage(`{"msgtype":"m.text","body":"fan-out"}`)
	wait := func(n int) (responses int) {
		for n > 0 {
			select {
			case k := <-got:
				n -= k
				responses++
			case err := <-errs:
				b.Fatal(err)
			case <-time.After(time.Minute):
				b.Fatalf("%d deliveries missing after a minute", n)
			}
		}
		return responses
	}
	send := func() error {
		_, err := s.Rooms.Send(ctx, roomID, alice, "m.room.message", body)
		return err
	}
	servertest.FanOut(b, send, func() int { return wait(receivers) }, got, *syncTransportsProfile, nil)
}

// messagesIn counts the message events of a sync response's raw JSON.
func messagesIn(raw []byte) int { return bytes.Count(raw, []byte(`"type":"m.room.message"`)) }

// nextBatchOf finds next_batch in a sync response's raw JSON (tokens hold no quotes or escapes).
func nextBatchOf(raw []byte) string {
	_, rest, ok := bytes.Cut(raw, []byte(`"next_batch":"`))
	if !ok {
		return ""
	}
	tok, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(tok)
}

func benchLongPoll(ctx context.Context, client *http.Client, base, token string, q url.Values, got chan<- int) error {
	q.Set("timeout", "60000")
	var buf bytes.Buffer
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/_matrix/client/v3/sync?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /sync: %d %s", resp.StatusCode, buf.Bytes())
		}
		q.Set("since", nextBatchOf(buf.Bytes()))
		got <- messagesIn(buf.Bytes())
	}
	return nil
}

func benchSSE(ctx context.Context, client *http.Client, base, token string, q url.Values, got chan<- int) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+streamAPI+"/sync/sse?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("SSE: %d %s", resp.StatusCode, raw)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull { // a line longer than the buffer (the first response)
			long = append(long, line...)
			continue
		}
		if err != nil {
			return err
		}
		if long != nil {
			line, long = append(long, line...), nil
		}
		if data, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			got <- messagesIn(data)
		}
	}
}

func benchWS(ctx context.Context, client *http.Client, base, token string, q url.Values, got chan<- int) error {
	u := "ws" + strings.TrimPrefix(base, "http") + streamAPI + "/sync/ws?" + q.Encode()
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		got <- messagesIn(data)
	}
}
