package homeserver_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver"
	"github.com/hearthmx/homeserver/homeserver/config"
)

// TestStartupFailureIsAnError checks that a failing start-up returns an error naming the cause
// (here a signing key readable by others) rather than crashing.
func TestStartupFailureIsAnError(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	key := filepath.Join(cfg.DataDir, "signing.key")
	if err := os.WriteFile(key, []byte("ed25519 a_abcd YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := homeserver.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("want an error about the key's permissions, got %v", err)
	}
	cfg.Database.Backend, cfg.Database.PostgresDSN = "postgres", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	os.Chmod(key, 0o600)
	if _, err := homeserver.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("unreachable database must fail start-up")
	}
}
