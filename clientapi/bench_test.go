package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// The benchmarks drive a whole server over loopback HTTP, in parallel (b.RunParallel), on each
// backend. Figures go to docs/performance.md.

func post(b *testing.B, url, token string, body any) (int, []byte) {
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func forBackends(b *testing.B, fn func(b *testing.B, s *servertest.Server)) {
	for _, backend := range storagetest.Backends {
		b.Run(backend, func(b *testing.B) { fn(b, servertest.Start(b, backend)) })
	}
}

// BenchmarkLogin is POST /login with a password (argon2id verification dominates).
func BenchmarkLogin(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		s.Register(b, "alice", "alice password")
		body := map[string]any{"type": "m.login.password", "user": "alice", "password": "alice password"}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if st, raw := post(b, s.URL+"/_matrix/client/v3/login", "", body); st != 200 {
					b.Fatalf("login: %d %s", st, raw)
				}
			}
		})
	})
}

// BenchmarkRegister is the two-step /register with m.login.dummy (hashing + one transaction).
func BenchmarkRegister(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		var n atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				body := map[string]any{"username": fmt.Sprintf("user%d", n.Add(1)), "password": "some password"}
				st, raw := post(b, s.URL+"/_matrix/client/v3/register", "", body)
				if st != 401 {
					b.Fatalf("register challenge: %d %s", st, raw)
				}
				var ch struct{ Session string }
				_ = json.Unmarshal(raw, &ch)
				body["auth"] = map[string]any{"type": "m.login.dummy", "session": ch.Session}
				if st, raw := post(b, s.URL+"/_matrix/client/v3/register", "", body); st != 200 {
					b.Fatalf("register: %d %s", st, raw)
				}
			}
		})
	})
}

// BenchmarkWhoami is the cost of an authenticated request (token lookup) end to end.
func BenchmarkWhoami(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		u := s.Register(b, "alice", "alice password")
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/account/whoami", nil)
				req.Header.Set("Authorization", "Bearer "+u.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("whoami: %d", resp.StatusCode)
				}
			}
		})
	})
}

// BenchmarkVersions is an unauthenticated request through the full middleware stack, the ceiling
// for any endpoint of ours.
func BenchmarkVersions(b *testing.B) {
	s := servertest.Start(b, "sqlite")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := http.Get(s.URL + "/_matrix/client/versions")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkMessages is GET /messages pages of 50 from random points of a 2,000-message room,
// with the history-visibility check and unsigned assembly of every event.
func BenchmarkMessages(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		u := s.Register(b, "alice", "alice password")
		st, raw := post(b, s.URL+"/_matrix/client/v3/createRoom", u.AccessToken, map[string]any{"preset": "public_chat"})
		if st != 200 {
			b.Fatalf("createRoom: %d %s", st, raw)
		}
		var created struct {
			RoomID string `json:"room_id"`
		}
		_ = json.Unmarshal(raw, &created)
		room := url.PathEscape(created.RoomID)
		var end string
		for i := 0; i < 2000; i++ {
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/b%d", s.URL, room, i),
				bytes.NewReader([]byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))))
			req.Header.Set("Authorization", "Bearer "+u.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
		// Collect tokens along the timeline to start pages from.
		var tokens []string
		for from := ""; len(tokens) < 40; {
			req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=50"+from, nil)
			req.Header.Set("Authorization", "Bearer "+u.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			var page struct {
				End string `json:"end"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			if page.End == "" {
				break
			}
			end = page.End
			tokens = append(tokens, end)
			from = "&from=" + url.QueryEscape(end)
		}
		var n atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tok := tokens[int(n.Add(1))%len(tokens)]
				req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=50&from="+url.QueryEscape(tok), nil)
				req.Header.Set("Authorization", "Bearer "+u.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("messages: %d", resp.StatusCode)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
	})
}
