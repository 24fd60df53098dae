//go:build linux

package main

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
)

// Docker is not needed for these tests: they check what the images rely on. The Dockerfile at the
// repository root (production, FROM scratch) and scripts/complement/Dockerfile (Complement) are
// read for their instructions and environment; the binary is built as the Dockerfile builds it
// (CGO_ENABLED=0) and run as PID 1 of a new PID namespace when the kernel allows it, as in a
// container, where it must stop cleanly on SIGTERM (docker stop).

// dockerfileInstructions reads a Dockerfile into its instructions (continuation lines joined,
// comments dropped), each as "KEYWORD arguments".
func dockerfileInstructions(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || trimmed == "" && cur.Len() == 0 {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	return out
}

// dockerfileEnv collects the KEY=value pairs of the ENV instructions after the last FROM (the
// final image's), in os.Environ() form.
func dockerfileEnv(instructions []string) []string {
	var env []string
	for _, in := range instructions {
		kw, args, _ := strings.Cut(in, " ")
		switch strings.ToUpper(kw) {
		case "FROM":
			env = nil
		case "ENV":
			env = append(env, strings.Fields(args)...)
		}
	}
	return env
}

// finalStage returns the instructions from the last FROM on.
func finalStage(instructions []string) []string {
	last := 0
	for i, in := range instructions {
		if strings.HasPrefix(strings.ToUpper(in), "FROM ") {
			last = i
		}
	}
	return instructions[last:]
}

func hasInstruction(instructions []string, re string) bool {
	r := regexp.MustCompile(`(?i)^` + re + `$`)
	for _, in := range instructions {
		if r.MatchString(in) {
			return true
		}
	}
	return false
}

// checkEnvIsConfig applies the image's environment to the defaults and expects no problem: every
// HS_ variable names a config key and the result validates.
func checkEnvIsConfig(t *testing.T, env []string) *config.Config {
	t.Helper()
	cfg := config.Default()
	problems := config.ApplyEnv(cfg, env)
	problems = append(problems, cfg.Validate()...)
	for _, p := range problems {
		t.Errorf("image environment: %s", p)
	}
	return cfg
}

func TestDockerfile(t *testing.T) {
	root := moduleRoot(t)
	all := dockerfileInstructions(t, filepath.Join(root, "Dockerfile"))
	final := finalStage(all)
	for _, want := range []struct{ re, what string }{
		{`FROM scratch`, "an empty final image"},
		{`COPY --from=\S+ /etc/ssl/certs/ca-certificates\.crt /etc/ssl/certs/ca-certificates\.crt`, "the CA certificates"},
		{`COPY --from=\S+ \S+ /homeserver`, "the binary"},
		{`VOLUME \[?"?/data"?\]?`, "the data volume"},
		{`EXPOSE 8008 8448`, "the client and federation ports"},
		{`ENTRYPOINT \["/homeserver", *"run"\]`, "the server as PID 1, without a shell"},
	} {
		if !hasInstruction(final, want.re) {
			t.Errorf("the final stage of the Dockerfile lacks %s (%s):\n%s", want.what, want.re, strings.Join(final, "\n"))
		}
	}
	if !hasInstruction(all[:len(all)-len(final)], `RUN CGO_ENABLED=0 go build .* \./cmd/homeserver( .*)?`) {
		t.Errorf("the build stage does not build ./cmd/homeserver with CGO_ENABLED=0")
	}
	env := dockerfileEnv(all)
	cfg := checkEnvIsConfig(t, env)
	if cfg.DataDir != "/data" {
		t.Errorf("data_dir in the image is %q, want the volume /data (HS_DATA_DIR)", cfg.DataDir)
	}
	if !strings.HasSuffix(cfg.Listen.Client, ":8008") {
		t.Errorf("listen.client in the image is %q, want port 8008 (HS_LISTEN_CLIENT)", cfg.Listen.Client)
	}

	// The Complement image: SERVER_NAME mapped by its entrypoint, the CA Complement mounts used
	// for the federation certificate and trusted for outgoing federation.
	cdir := filepath.Join(root, "scripts", "complement")
	call := dockerfileInstructions(t, filepath.Join(cdir, "Dockerfile"))
	cfinal := finalStage(call)
	for _, re := range []string{`EXPOSE 8008 8448`, `ENTRYPOINT \["/entrypoint\.sh"\]`, `COPY scripts/complement/entrypoint\.sh /entrypoint\.sh`} {
		if !hasInstruction(cfinal, re) {
			t.Errorf("scripts/complement/Dockerfile lacks %s", re)
		}
	}
	cenv := append(dockerfileEnv(call), "HS_SERVER_NAME=hs1")
	ccfg := checkEnvIsConfig(t, cenv)
	if ccfg.Federation.TLS.CACertFile != "/complement/ca/ca.crt" || ccfg.Federation.TLS.CAKeyFile != "/complement/ca/ca.key" {
		t.Errorf("the Complement image does not issue its certificate from /complement/ca: %+v", ccfg.Federation.TLS)
	}
	if ccfg.FederationListen() != "0.0.0.0:8448" || ccfg.Listen.Client != "0.0.0.0:8008" {
		t.Errorf("the Complement image listens on %q and %q, want 0.0.0.0:8008 and 0.0.0.0:8448", ccfg.Listen.Client, ccfg.FederationListen())
	}
	if !ccfg.RegistrationOpen() || ccfg.Registration.SharedSecret != "complement" || ccfg.RateLimits.Enabled {
		t.Errorf("the Complement image needs open registration, the shared secret \"complement\" and no rate limits")
	}
	script, err := os.ReadFile(filepath.Join(cdir, "entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), `HS_SERVER_NAME="${SERVER_NAME`) || !strings.Contains(string(script), "exec /homeserver run") {
		t.Errorf("entrypoint.sh must map SERVER_NAME to HS_SERVER_NAME and exec the server:\n%s", script)
	}
	if info, err := os.Stat(filepath.Join(cdir, "entrypoint.sh")); err != nil || info.Mode().Perm()&0o111 == 0 {
		t.Errorf("entrypoint.sh is not executable: %v", err)
	}
}

// pid1Attr returns process attributes that make the child PID 1 of a new PID namespace (with a
// user namespace when not root), or nil when the kernel or the sandbox refuses them.
func pid1Attr(t *testing.T, bin string) *syscall.SysProcAttr {
	t.Helper()
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	}
	probe := exec.Command(bin, "version")
	probe.SysProcAttr = attr
	if err := probe.Run(); err != nil {
		t.Logf("no new PID namespace here (%v): the server runs as an ordinary child process", err)
		return nil
	}
	return attr
}

// nsPID is the process's PID in its innermost PID namespace (the last NSpid field).
func nsPID(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			return f[len(f)-1]
		}
	}
	return ""
}

// TestStaticBinaryStopsOnSIGTERM builds the binary as the Dockerfile does, checks that it is
// static (no ELF interpreter: it runs in a FROM scratch image), starts it with the image's
// environment (a temporary data directory and a free port instead of /data and 8008), waits until
// it serves, sends SIGTERM and expects exit status 0 within a few seconds.
func TestStaticBinaryStopsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildBinaryEnv(t, "CGO_ENABLED=0")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("the CGO_ENABLED=0 binary has an ELF interpreter: it is not static")
		}
	}
	f.Close()

	var env []string
	for _, kv := range dockerfileEnv(dockerfileInstructions(t, filepath.Join(moduleRoot(t), "Dockerfile"))) {
		if !strings.HasPrefix(kv, "HS_DATA_DIR=") && !strings.HasPrefix(kv, "HS_LISTEN_CLIENT=") {
			env = append(env, kv)
		}
	}
	attr := pid1Attr(t, bin)
	srv := startServerAttr(t, bin, t.TempDir(), env, attr)
	if attr != nil {
		if got := nsPID(srv.cmd.Process.Pid); got != "1" {
			t.Fatalf("the server is PID %q in its namespace, want 1", got)
		}
	}
	start := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the server did not stop within 10s of SIGTERM:\n%s", srv.logs.String())
	}
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM (%s), want 0:\n%s", code, srv.cmd.ProcessState, srv.logs.String())
	}
	if !strings.Contains(srv.logs.String(), "msg=stopped") {
		t.Errorf("no \"stopped\" log line after SIGTERM:\n%s", srv.logs.String())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
