package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/homeserver"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// runCmd runs the command line as main would, with stdin, and returns the exit code and output.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, "", "version")
	if code != 0 || !strings.Contains(out, homeserver.Version) || !strings.HasPrefix(out, "homeserver ") {
		t.Fatalf("version: exit %d, output %q; want the version %s", code, out, homeserver.Version)
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, errOut := runCmd(t, "", "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "Usage:") {
		t.Fatalf("unknown command: exit %d, stderr %q; want 2 with the usage", code, errOut)
	}
	if code, _, _ := runCmd(t, "", "check-config", "-no-such-flag"); code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
}

func TestGenerateConfigPassesCheckConfig(t *testing.T) {
	code, sample, errOut := runCmd(t, "", "generate-config")
	if code != 0 || errOut != "" {
		t.Fatalf("generate-config: exit %d, stderr %q", code, errOut)
	}
	cfg := config.Default()
	if problems := config.Parse([]byte(sample), cfg); len(problems) != 0 {
		t.Fatalf("generated config does not parse: %v", problems)
	}
	if problems := cfg.Validate(); len(problems) != 0 {
		t.Fatalf("generated config is invalid: %v", problems)
	}
	path := writeFile(t, "config.yaml", sample)
	code, out, errOut := runCmd(t, "", "check-config", "-config", path)
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("check-config on the generated config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestGenerateConfigForServerName(t *testing.T) {
	secrets := map[string]bool{}
	for i := 0; i < 2; i++ {
		path := filepath.Join(t.TempDir(), "homeserver.yaml")
		code, out, errOut := runCmd(t, "", "generate-config", "-server-name", "example.org", "-o", path)
		if code != 0 || out != "" {
			t.Fatalf("generate-config -o: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("config file mode %v, want 0600 (it holds the registration secret)", st.Mode().Perm())
		}
		cfg, problems, err := config.Load(path, nil)
		if err != nil || len(problems) != 0 {
			t.Fatalf("load generated file: %v %v", err, problems)
		}
		if cfg.ServerName != "example.org" {
			t.Fatalf("server_name = %q, want example.org", cfg.ServerName)
		}
		if !regexp.MustCompile(`^[0-9a-f]{32,}$`).MatchString(cfg.Registration.SharedSecret) {
			t.Fatalf("shared_secret = %q, want a long random hex string", cfg.Registration.SharedSecret)
		}
		secrets[cfg.Registration.SharedSecret] = true
		if code, _, errOut := runCmd(t, "", "check-config", "-config", path); code != 0 {
			t.Fatalf("check-config on generated file: exit %d, %s", code, errOut)
		}
	}
	if len(secrets) != 2 {
		t.Fatal("two generated configs have the same shared secret")
	}
}

func TestCheckConfigReportsEveryProblem(t *testing.T) {
	path := writeFile(t, "bad.yaml", `server_name: example.org
colour: blue
listen:
  client: "no port here"
database:
  backend: mysql
logging:
  level: loud
  verbosity: 3
`)
	code, out, errOut := runCmd(t, "", "check-config", "-config", path)
	if code != 1 {
		t.Fatalf("check-config on a bad file: exit %d, want 1; stderr %q", code, errOut)
	}
	if strings.Contains(out, "configuration OK") {
		t.Fatalf("bad config reported OK: %q", out)
	}
	for _, want := range []string{
		"config: colour: unknown key",
		"config: logging.verbosity: unknown key",
		"config: listen.client: must be host:port",
		`config: database.backend: must be sqlite or postgres, got "mysql"`,
		`config: logging.level: must be debug, info, warn or error, got "loud"`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, errOut)
		}
	}
}

func TestCheckConfigEnvOverride(t *testing.T) {
	t.Setenv("HS_DATABASE_BACKEND", "nope")
	code, _, errOut := runCmd(t, "", "check-config")
	if code != 1 || !strings.Contains(errOut, `database.backend: must be sqlite or postgres, got "nope"`) {
		t.Fatalf("env override: exit %d, stderr %q; want the bad database.backend reported", code, errOut)
	}
	t.Setenv("HS_DATABASE_BACKEND", "sqlite")
	t.Setenv("HS_DATABSE_BACKEND", "sqlite") // a typo must not pass silently
	code, _, errOut = runCmd(t, "", "check-config")
	if code != 1 || !strings.Contains(errOut, "HS_DATABSE_BACKEND: environment variable matches no config key") {
		t.Fatalf("misspelt env var: exit %d, stderr %q", code, errOut)
	}
}

func TestCreateUser(t *testing.T) {
	dataDir := t.TempDir()
	t.Setenv("HS_DATA_DIR", dataDir)
	const password = "a long enough password"

	code, out, errOut := runCmd(t, password+"\n", "create-user", "-password-stdin", "-admin", "alice")
	if code != 0 || !strings.Contains(out, "created admin @alice:localhost") {
		t.Fatalf("create-user: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := runCmd(t, "other password\n", "create-user", "-password-stdin", "bob"); code != 0 ||
		!strings.Contains(out, "created user @bob:localhost") {
		t.Fatalf("create-user bob: exit %d, stdout %q", code, out)
	}

	// A second user of the same name is refused and the first is untouched.
	code, _, errOut = runCmd(t, "another password\n", "create-user", "-password-stdin", "alice")
	if code != 1 || !strings.Contains(errOut, "M_USER_IN_USE") {
		t.Fatalf("create-user of an existing name: exit %d, stderr %q; want 1 and M_USER_IN_USE", code, errOut)
	}
	// An empty password is refused.
	if code, _, _ := runCmd(t, "\n", "create-user", "-password-stdin", "carol"); code != 1 {
		t.Fatalf("create-user with no password: exit %d, want 1", code)
	}
	if code, _, _ := runCmd(t, password+"\n", "create-user", "-password-stdin"); code != 2 {
		t.Fatalf("create-user without a name: exit %d, want 2", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := storage.Open(ctx, storage.Options{Backend: "sqlite", SQLitePath: filepath.Join(dataDir, "homeserver.db"), MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	alice, err := store.Read().Account(ctx, "alice")
	if err != nil {
		t.Fatalf("alice not in the store: %v", err)
	}
	if !alice.Admin {
		t.Fatal("alice was created with -admin but is not an admin")
	}
	if ok, err := account.VerifyPassword(alice.PasswordHash, password); err != nil || !ok {
		t.Fatalf("alice's password does not verify: ok=%v err=%v", ok, err)
	}
	if ok, _ := account.VerifyPassword(alice.PasswordHash, "another password"); ok {
		t.Fatal("the refused second create-user changed alice's password")
	}
	bob, err := store.Read().Account(ctx, "bob")
	if err != nil || bob.Admin {
		t.Fatalf("bob: admin=%v err=%v, want a normal user", bob.Admin, err)
	}
	if _, err := store.Read().Account(ctx, "carol"); err == nil {
		t.Fatal("carol was created without a password")
	}
}

// generate-ca writes a CA that certificates can be issued from, with a private key file only its
// owner reads, and refuses to overwrite it.
func TestGenerateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	code, out, errOut := runCmd(t, "", "generate-ca", dir)
	if code != 0 {
		t.Fatalf("generate-ca: exit %d, stderr %q", code, errOut)
	}
	crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if !strings.Contains(out, crt) || !strings.Contains(out, key) {
		t.Errorf("stdout %q does not name the files", out)
	}
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, mode %v", err, st.Mode().Perm())
	}
	if _, err := cert.IssueFromFiles(crt, key, []string{"127.0.0.2"}); err != nil {
		t.Fatalf("issuing from the generated CA: %v", err)
	}
	if code, _, _ := runCmd(t, "", "generate-ca", dir); code == 0 {
		t.Error("generate-ca overwrote an existing CA")
	}
	if code, _, _ := runCmd(t, "", "generate-ca"); code != 2 {
		t.Errorf("generate-ca without DIR: exit %d, want 2", code)
	}
}

// TestGCPercent: without GOGC in the environment the server runs the collector at
// defaultGCPercent; with it, the environment's setting stays.
func TestGCPercent(t *testing.T) {
	t.Setenv("GOGC", "100") // restored after the test
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	setGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set, the percent became %d", got)
	}
	os.Unsetenv("GOGC")
	setGCPercent()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("without GOGC, the percent is %d, want %d", got, defaultGCPercent)
	}
}
