package clientapi_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// BenchmarkKeysClaim is POST /keys/claim of one key of one device, in parallel, spread over 10
// devices holding 1,000 one-time keys each (when b.N passes 10,000 the rest get fallback keys).
func BenchmarkKeysClaim(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		var devs []keyDevice
		for i := range 10 {
			var d keyDevice
			if i == 0 {
				d = withKeys(s.Register(b, "alice", "alice password"))
			} else {
				d = withKeys(s.Login(b, "alice", "alice password"))
			}
			benchUpload(b, s, d, map[string]any{"device_keys": d.DeviceKeys(b), "fallback_keys": d.fallback(b, "F")})
			for batch := range 5 {
				benchUpload(b, s, d, map[string]any{"one_time_keys": d.otks(b, fmt.Sprintf("b%d_", batch), 200)})
			}
			devs = append(devs, d)
		}
		bob := s.Register(b, "bob", "bob password")
		var n atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				d := devs[int(n.Add(1))%len(devs)]
				body := map[string]any{"one_time_keys": map[string]any{d.UserID: map[string]string{d.DeviceID: "signed_curve25519"}}}
				if st, raw := post(b, s.URL+keysV3+"/keys/claim", bob.AccessToken, body); st != 200 {
					b.Fatalf("claim: %d %s", st, raw)
				}
			}
		})
	})
}

// BenchmarkKeysQuery is POST /keys/query for 10 users with two devices and cross-signing keys
// each, in parallel.
func BenchmarkKeysQuery(b *testing.B) {
	forBackends(b, func(b *testing.B, s *servertest.Server) {
		query := map[string]any{}
		for i := range 10 {
			name := fmt.Sprintf("user%d", i)
			d1 := withKeys(s.Register(b, name, "user password"))
			d2 := withKeys(s.Login(b, name, "user password"))
			for _, d := range []keyDevice{d1, d2} {
				benchUpload(b, s, d, map[string]any{"device_keys": d.DeviceKeys(b)})
			}
			cs := newCrossSigning()
			if st, raw := post(b, s.URL+keysV3+"/keys/device_signing/upload", d1.AccessToken, cs.body(b, d1.UserID, cs.master)); st != 200 {
				b.Fatalf("device_signing/upload: %d %s", st, raw)
			}
			query[d1.UserID] = []string{}
		}
		viewer := s.Register(b, "viewer", "viewer password")
		body := map[string]any{"device_keys": query}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if st, raw := post(b, s.URL+keysV3+"/keys/query", viewer.AccessToken, body); st != 200 {
					b.Fatalf("query: %d %s", st, raw)
				}
			}
		})
	})
}

func benchUpload(b *testing.B, s *servertest.Server, d keyDevice, body map[string]any) {
	b.Helper()
	if st, raw := post(b, s.URL+keysV3+"/keys/upload", d.AccessToken, body); st != 200 {
		b.Fatalf("upload: %d %s", st, raw)
	}
}
