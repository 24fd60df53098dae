// Command homeserver runs a Matrix homeserver and manages its configuration and users.
//
//	homeserver [run] [-config FILE]          start the server (the default)
//	homeserver generate-config [-server-name NAME] [-o FILE]
//	homeserver check-config -config FILE
//	homeserver create-user [-config FILE] [-admin] [-password-stdin] USERNAME
//	homeserver generate-ca [-name NAME] DIR
//	homeserver version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return cmdRun(ctx, args, stderr)
	case "generate-config":
		return cmdGenerateConfig(args, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args, stdout, stderr)
	case "create-user":
		return cmdCreateUser(args, stdin, stdout, stderr)
	case "generate-ca":
		return cmdGenerateCA(args, stdout, stderr)
	case "version":
		return cmdVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "homeserver: unknown command %q\n\n%s", cmd, usage)
	return 2
}

const usage = `Usage: homeserver <command> [flags]

Commands:
  run              start the server (the default command)
  generate-config  print a documented configuration file
  check-config     report every problem in a configuration file
  create-user      create a user account (password from stdin or a prompt)
  generate-ca      create a CA for a local test federation (ca.crt, ca.key)
  version          print the version

Run "homeserver <command> -h" for a command's flags. Without -config the server
runs on built-in defaults; any option can be set with an HS_* environment variable
(see config.yaml).
`
