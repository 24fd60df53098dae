package mediaapi

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
)

// s3Stub is an S3-compatible server limited to the calls s3Blobs makes (HEAD, GET with Range,
// single PUT and DELETE of objects, path-style), for testing without a real S3 or MinIO. Any
// other request fails the test. It checks that requests are signed with the configured key.
type s3Stub struct {
	t       testing.TB
	bucket  string
	keyID   string
	mu      sync.Mutex
	objects map[string][]byte
	puts    int
}

func newS3Stub(t testing.TB, bucket, keyID string) (*s3Stub, *httptest.Server) {
	st := &s3Stub{t: t, bucket: bucket, keyID: keyID, objects: map[string][]byte{}}
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	return st, srv
}

func (st *s3Stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Authorization"), "Credential="+st.keyID+"/") {
		st.t.Errorf("s3 stub: %s %s not signed with %s: %q", r.Method, r.URL, st.keyID, r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusForbidden)
		return
	}
	key, ok := strings.CutPrefix(r.URL.Path, "/"+st.bucket+"/")
	if !ok || key == "" || len(r.URL.Query()) > 0 {
		st.t.Errorf("s3 stub: unexpected request %s %s", r.Method, r.URL)
		w.WriteHeader(http.StatusNotImplemented)
		return
	}
	st.mu.Lock()
	data, exists := st.objects[key]
	st.mu.Unlock()
	etag := func(b []byte) string { s := md5.Sum(b); return `"` + hex.EncodeToString(s[:]) + `"` }
	switch r.Method {
	case http.MethodHead, http.MethodGet:
		if !exists {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			if r.Method == http.MethodGet {
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>%s</Key></Error>`, key)
			}
			return
		}
		w.Header().Set("ETag", etag(data))
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), bytes.NewReader(data))
	case http.MethodPut:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if enc := r.Header.Get("Content-Encoding"); enc != "" {
			st.t.Errorf("s3 stub: PUT with Content-Encoding %q (chunked signing is not implemented)", enc)
		}
		st.mu.Lock()
		st.objects[key] = body
		st.puts++
		st.mu.Unlock()
		w.Header().Set("ETag", etag(body))
		w.WriteHeader(http.StatusOK)
	case http.MethodDelete:
		st.mu.Lock()
		delete(st.objects, key)
		st.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		st.t.Errorf("s3 stub: unexpected method %s", r.Method)
		w.WriteHeader(http.StatusNotImplemented)
	}
}

// spoolOf writes data to a spool file as an upload would.
func spoolOf(t *testing.T, dir string, data []byte) *spool {
	t.Helper()
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return &spool{f: f, sha: hex.EncodeToString(sum[:]), size: int64(len(data))}
}

// testBlobs runs the Blobs contract against a store.
func testBlobs(t *testing.T, blobs Blobs) {
	ctx := context.Background()
	spoolDir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	sp := spoolOf(t, spoolDir, data)
	defer sp.remove()
	if _, err := blobs.Open(ctx, sp.sha); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("Open before Put: %v, want ErrBlobNotFound", err)
	}
	if err := blobs.Put(ctx, sp.sha, sp.f, sp.size); err != nil {
		t.Fatal(err)
	}
	again := spoolOf(t, spoolDir, data) // the same content again: kept once
	defer again.remove()
	if err := blobs.Put(ctx, again.sha, again.f, again.size); err != nil {
		t.Fatal(err)
	}
	b, err := blobs.Open(ctx, sp.sha)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", b.Size(), len(data))
	}
	// Seek and read a range, then the whole.
	if _, err := b.Seek(5005, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 10)
	if _, err := io.ReadFull(b, part); err != nil || string(part) != "5678901234" {
		t.Fatalf("range read = %q, %v", part, err)
	}
	if _, err := b.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("read %d bytes, %v", len(all), err)
	}
	b.Close()
	if err := blobs.Delete(ctx, sp.sha); err != nil {
		t.Fatal(err)
	}
	if _, err := blobs.Open(ctx, sp.sha); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("Open after Delete: %v", err)
	}
	if err := blobs.Delete(ctx, sp.sha); err != nil {
		t.Fatalf("Delete of an absent blob: %v", err)
	}
	if err := blobs.Put(ctx, "../../etc/passwd", sp.f, 1); err == nil {
		t.Fatal("Put accepted a bad name")
	}
}

func TestFSBlobs(t *testing.T) {
	dir := t.TempDir()
	blobs, err := newFSBlobs(dir)
	if err != nil {
		t.Fatal(err)
	}
	testBlobs(t, blobs)
	// Same content twice: one file.
	ctx := context.Background()
	for range 2 {
		sp := spoolOf(t, t.TempDir(), []byte("once"))
		if err := blobs.Put(ctx, sp.sha, sp.f, sp.size); err != nil {
			t.Fatal(err)
		}
		sp.remove()
	}
	if n := countFiles(t, filepath.Join(dir, "content")); n != 1 {
		t.Fatalf("%d files stored, want 1", n)
	}
}

func countFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

func TestS3Blobs(t *testing.T) {
	stub, srv := newS3Stub(t, "media", "AKIDTEST")
	blobs, err := newS3Blobs(config.MediaS3{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "media",
		Region: "us-east-1", AccessKeyID: "AKIDTEST", SecretAccessKey: "secret", Prefix: "hs/"})
	if err != nil {
		t.Fatal(err)
	}
	testBlobs(t, blobs)
	if stub.puts != 1 {
		t.Fatalf("%d PUTs for the same content twice, want 1", stub.puts)
	}
}
