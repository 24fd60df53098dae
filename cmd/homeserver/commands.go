package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/term"

	repo "github.com/hearthmx/homeserver"
	"github.com/hearthmx/homeserver/homeserver"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// configFlag adds -config (default from $HS_CONFIG).
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("HS_CONFIG"), "configuration file (default: built-in defaults; env HS_CONFIG)")
}

// loadConfig reads the config file (if any) and the environment and validates the result; it
// prints every problem.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, problems, err := config.Load(path, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return nil, false
	}
	problems = append(problems, cfg.Validate()...)
	for _, p := range problems {
		fmt.Fprintf(stderr, "config: %s\n", p)
	}
	return cfg, len(problems) == 0
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	setGCPercent()
	log := homeserver.NewLogger(cfg.Logging, stderr)
	source := *path
	if source == "" {
		source = "built-in defaults"
	}
	log.Info("starting homeserver", "version", homeserver.Version, "config", source, "server_name", cfg.ServerName)
	log.Info("data", homeserver.DataLocations(cfg)...)
	if cfg.RegistrationOpen() {
		log.Warn("open registration is on: anyone who can reach this server can create an account")
	}
	srv, err := homeserver.New(ctx, cfg, log)
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	defer srv.Close()
	if err := srv.Listen(); err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	if err := srv.Serve(ctx); err != nil {
		log.Error("server stopped with an error", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func cmdGenerateConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	serverName := fs.String("server-name", "", "set server_name and generate a registration shared secret")
	out := fs.String("o", "", "write to this file (mode 0600) instead of standard output")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	data := repo.SampleConfig
	if *serverName != "" {
		var secret [24]byte
		_, _ = rand.Read(secret[:])
		s := regexp.MustCompile(`(?m)^server_name: .*$`).ReplaceAllLiteralString(string(data), "server_name: "+*serverName)
		s = regexp.MustCompile(`(?m)^  shared_secret: .*$`).ReplaceAllLiteralString(s, `  shared_secret: "`+hex.EncodeToString(secret[:])+`"`)
		data = []byte(s)
	}
	if *out == "" {
		_, _ = stdout.Write(data)
		return 0
	}
	// Never overwrite: an existing file may hold secrets and other permissions.
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "homeserver: %v (generate-config does not overwrite files)\n", err)
		return 1
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	return 0
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, ok := loadConfig(*path, stderr); !ok {
		return 1
	}
	fmt.Fprintln(stdout, "configuration OK")
	return 0
}

func cmdCreateUser(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("create-user", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	admin := fs.Bool("admin", false, "make the user a server admin")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: homeserver create-user [-config FILE] [-admin] [-password-stdin] USERNAME")
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	password, err := readPassword(stdin, stderr, *fromStdin)
	if err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	store, err := storage.Open(ctx, storage.Options{Backend: cfg.Database.Backend, SQLitePath: cfg.SQLiteFile(),
		PostgresDSN: cfg.Database.PostgresDSN, MaxOpenConns: 2})
	if err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	defer store.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := account.New(store, nil, account.Options{ServerName: cfg.ServerName, PasswordMinLength: cfg.Auth.PasswordMinLength}, log)
	name := fs.Arg(0)
	if strings.HasPrefix(name, "@") {
		local, server, _ := strings.Cut(name[1:], ":")
		if server != cfg.ServerName {
			fmt.Fprintf(stderr, "homeserver: %s is not a user of this server (%s)\n", name, cfg.ServerName)
			return 1
		}
		name = local
	}
	localpart := strings.ToLower(name)
	if err := svc.CheckPasswordStrength(password); err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	t, err := svc.Register(ctx, account.RegisterParams{Localpart: localpart, Password: password, Admin: *admin, InhibitLogin: true})
	if err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	role := "user"
	if *admin {
		role = "admin"
	}
	fmt.Fprintf(stdout, "created %s %s\n", role, t.UserID)
	return 0
}

// readPassword reads the password from stdin's first line, or prompts twice on a terminal.
func readPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) (string, error) {
	f, isFile := stdin.(*os.File)
	if fromStdin || !isFile || !term.IsTerminal(int(f.Fd())) {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", errors.New("no password on standard input")
		}
		return line, nil
	}
	fmt.Fprint(stderr, "Password: ")
	p1, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(stderr, "Confirm password: ")
	p2, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if string(p1) != string(p2) {
		return "", errors.New("passwords do not match")
	}
	return string(p1), nil
}

func cmdVersion(stdout io.Writer) int {
	fmt.Fprintf(stdout, "homeserver %s (%s, %s/%s)\n", homeserver.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}

// defaultGCPercent is the garbage collector's GOGC when the environment does not set one. The
// server's live heap is small (tens of MB) and it allocates per request, so with Go's default
// of 100 it collects many times a second: 200 halves that for a heap that may grow to three times
// the live one instead of twice (a long-poll fan-out spent 12 % less CPU per response;
// docs/performance.md). GOGC and GOMEMLIMIT in the environment still decide when set.
const defaultGCPercent = 200

func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}
