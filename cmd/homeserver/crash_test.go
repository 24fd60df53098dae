package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// The durability acceptance test: a second send with the same txnId returns the same event_id and
// stores one event, also when the server was killed (SIGKILL) after storing the first and
// restarted before the retry. It runs the real binary as a child process.

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// buildBinary builds ./cmd/homeserver into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	return buildBinaryEnv(t)
}

// buildBinaryEnv is buildBinary with extra environment for go build (CGO_ENABLED=0, ...).
func buildBinaryEnv(t *testing.T, env ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hs")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/homeserver")
	cmd.Dir = moduleRoot(t)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is one run of the server binary.
type process struct {
	cmd    *exec.Cmd
	url    string
	logs   *syncBuffer
	exited chan struct{}
}

// startServer runs the binary with the data directory and extra environment and waits until it
// answers /versions.
func startServer(t *testing.T, bin, dataDir string, env []string) *process {
	t.Helper()
	return startServerAttr(t, bin, dataDir, env, nil)
}

// startServerAttr is startServer with process attributes (namespaces, ...) for the child; nil
// for none.
func startServerAttr(t *testing.T, bin, dataDir string, env []string, attr *syscall.SysProcAttr) *process {
	t.Helper()
	port := freePort(t)
	p := &process{url: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "run")
	p.cmd.Dir = dataDir // no config.yaml here: defaults plus the environment
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HS_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, "HS_DATA_DIR="+dataDir, fmt.Sprintf("HS_LISTEN_CLIENT=127.0.0.1:%d", port),
		"HS_RATE_LIMITS_ENABLED=false", "HS_SERVER_NAME=localhost", "HS_REGISTRATION_ENABLED=true", "HS_LOGGING_LEVEL=info")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = attr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(t) })

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(p.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("server exited during start-up:\n%s", p.logs.String())
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready within 60s:\n%s", p.logs.String())
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Errorf("kill: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("server did not die after SIGKILL")
	}
}

// call sends a request and decodes the JSON object answer.
func (p *process) call(t *testing.T, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, p.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, p.logs.String())
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func (p *process) mustCall(t *testing.T, method, path, token string, body any) map[string]any {
	t.Helper()
	status, out := p.call(t, method, path, token, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s: %d %v", method, path, status, out)
	}
	return out
}

// register creates a user with the dummy flow and returns the access token.
func (p *process) register(t *testing.T, user string) string {
	t.Helper()
	body := map[string]any{"username": user, "password": "crash test password"}
	status, first := p.call(t, "POST", "/_matrix/client/v3/register", "", body)
	if status != http.StatusUnauthorized {
		t.Fatalf("register: want the 401 challenge, got %d %v", status, first)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first["session"]}
	out := p.mustCall(t, "POST", "/_matrix/client/v3/register", "", body)
	tok, _ := out["access_token"].(string)
	if tok == "" {
		t.Fatalf("register: no access token in %v", out)
	}
	return tok
}

// messageBodies lists the bodies of all m.room.message events of a room, oldest first.
func (p *process) messageBodies(t *testing.T, roomID, token string) (bodies, ids []string) {
	t.Helper()
	out := p.mustCall(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+`/messages?dir=f&limit=1000`, token, nil)
	chunk, _ := out["chunk"].([]any)
	for _, e := range chunk {
		ev, _ := e.(map[string]any)
		if ev["type"] != "m.room.message" {
			continue
		}
		content, _ := ev["content"].(map[string]any)
		b, _ := content["body"].(string)
		id, _ := ev["event_id"].(string)
		bodies = append(bodies, b)
		ids = append(ids, id)
	}
	return bodies, ids
}

func TestTxnIDSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildBinary(t)
	backends := []struct {
		name string
		env  func(t *testing.T) []string
	}{
		{"sqlite", func(t *testing.T) []string { return nil }},
		{"postgres", func(t *testing.T) []string {
			if os.Getenv(storagetest.EnvPostgresDSN) == "" {
				t.Skipf("%s not set", storagetest.EnvPostgresDSN)
			}
			return []string{"HS_DATABASE_BACKEND=postgres", "HS_DATABASE_POSTGRES_DSN=" + storagetest.NewPostgresDatabase(t)}
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			env := b.env(t)
			dataDir := t.TempDir()
			srv := startServer(t, bin, dataDir, env)
			token := srv.register(t, "alice")
			roomID, _ := srv.mustCall(t, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"name": "crash"})["room_id"].(string)
			if roomID == "" {
				t.Fatal("createRoom gave no room_id")
			}
			sendPath := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/txn-X"
			first, _ := srv.mustCall(t, "PUT", sendPath, token, map[string]any{"msgtype": "m.text", "body": "exactly once"})["event_id"].(string)
			if first == "" {
				t.Fatal("send gave no event_id")
			}

			srv.kill(t) // SIGKILL: no shutdown, no flush
			srv = startServer(t, bin, dataDir, env)

			// The client's retry after the crash: same token, same txnId.
			again, _ := srv.mustCall(t, "PUT", sendPath, token, map[string]any{"msgtype": "m.text", "body": "exactly once"})["event_id"].(string)
			if again != first {
				t.Fatalf("retry after restart gave %q, want the first send's %q", again, first)
			}
			bodies, ids := srv.messageBodies(t, roomID, token)
			if len(bodies) != 1 || bodies[0] != "exactly once" || ids[0] != first {
				t.Fatalf("after the retry the room holds messages %v %v, want exactly one %s", bodies, ids, first)
			}
			// The restarted server carries on: a new txnId is a new event after the first.
			next, _ := srv.mustCall(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/txn-Y", token,
				map[string]any{"msgtype": "m.text", "body": "after restart"})["event_id"].(string)
			bodies, ids = srv.messageBodies(t, roomID, token)
			if strings.Join(bodies, "|") != "exactly once|after restart" || ids[1] != next {
				t.Fatalf("after restart the room holds %v %v", bodies, ids)
			}
			ev := srv.mustCall(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(first), token, nil)
			if unsigned, _ := ev["unsigned"].(map[string]any); unsigned["transaction_id"] != "txn-X" {
				t.Fatalf("the first event lost its transaction ID across the restart: %v", ev)
			}
		})
	}
}
