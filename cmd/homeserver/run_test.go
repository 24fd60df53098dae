package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server goroutine to write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServesAndShutsDown starts `run` with no config file (defaults + environment), waits for the
// start-up log line naming the listener, talks to the server, then cancels the context as SIGTERM
// would and expects a clean exit with the signing key written 0600 under the data directory.
func TestRunServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HS_DATA_DIR", dir)
	t.Setenv("HS_LISTEN_CLIENT", "127.0.0.1:0")
	t.Setenv("HS_CONFIG", "")
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- cmdRun(ctx, nil, &logs) }()

	re := regexp.MustCompile(`msg=listening client_api=(http://127\.0\.0\.1:\d+)`)
	var url string
	for deadline := time.Now().Add(30 * time.Second); url == ""; {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("run exited early with %d:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no listening line within 30s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(url + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("versions: %d", resp.StatusCode)
	}
	for _, want := range []string{"data_dir=" + dir, "database=sqlite", "nats=embedded", "generated a new signing key"} {
		if !bytes.Contains([]byte(logs.String()), []byte(want)) {
			t.Errorf("start-up log lacks %q:\n%s", want, logs.String())
		}
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exited with %d after shutdown:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not shut down within 30s")
	}
	info, err := os.Stat(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("signing key mode %o, want 600", info.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, "homeserver.db")); err != nil {
		t.Fatalf("SQLite database not under the data directory: %v", err)
	}
}

// TestGenerateConfigDoesNotOverwrite checks that -o refuses an existing file and leaves it as it
// was.
func TestGenerateConfigDoesNotOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("server_name: mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"generate-config", "-server-name", "example.org", "-o", path}, nil, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1 (%s)", code, errb.String())
	}
	data, _ := os.ReadFile(path)
	if string(data) != "server_name: mine\n" {
		t.Fatalf("existing file overwritten: %q", data)
	}
}
