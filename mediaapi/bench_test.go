package mediaapi_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Uploads and downloads over loopback HTTP against a whole server on SQLite, each upload with new
// content (stored, not deduplicated). b.SetBytes makes go test report MB/s.
func BenchmarkUpload(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s := servertest.Start(b, "sqlite")
			alice := s.Register(b, "alice", "alice password")
			data := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, _ = rand.Read(data[:32]) // new content each time
				req, _ := http.NewRequest("POST", s.URL+"/_matrix/media/v3/upload", bytes.NewReader(data))
				req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
				req.Header.Set("Content-Type", "application/octet-stream")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					b.Fatalf("upload: %d", res.StatusCode)
				}
			}
		})
	}
}

func BenchmarkDownload(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s := servertest.Start(b, "sqlite")
			alice := s.Register(b, "alice", "alice password")
			data := make([]byte, size)
			_, _ = rand.Read(data)
			mxc := upload(b, s, alice.AccessToken, "audio/ogg", data, "")
			url := s.URL + "/_matrix/client/v1/media/download/" + mediaPath(b, mxc)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK || n != int64(size) {
					b.Fatalf("download: %d, %d bytes", res.StatusCode, n)
				}
			}
		})
	}
}

// BenchmarkThumbnailCached is a stored thumbnail fetched over HTTP.
func BenchmarkThumbnailCached(b *testing.B) {
	s := servertest.Start(b, "sqlite")
	alice := s.Register(b, "alice", "alice password")
	mxc := upload(b, s, alice.AccessToken, "image/jpeg", encodeJPEG(b, splitImage(1920, 1080)), "")
	if r := thumb(b, s, alice.AccessToken, mxc, 320, 240, "scale"); r.Status != http.StatusOK {
		b.Fatalf("thumbnail: %d", r.Status)
	}
	url := s.URL + "/_matrix/client/v1/media/thumbnail/" + mediaPath(b, mxc) + "?width=320&height=240&method=scale"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}
