package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hearthmx/homeserver/federation/cert"
)

// cmdGenerateCA writes a new certificate authority to DIR/ca.crt and DIR/ca.key (0600), for a
// local test federation: every server issues itself a certificate from it at start
// (federation.tls.ca_cert_file, ca_key_file) and trusts it (federation.tls.extra_ca_files).
// Existing files are never overwritten.
func cmdGenerateCA(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("generate-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "hearth test federation CA", "the CA's common name")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: homeserver generate-ca [-name NAME] DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	dir := fs.Arg(0)
	certPEM, keyPEM, err := cert.NewCA(*name)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err == nil {
		err = writeNew(key, keyPEM)
	}
	if err == nil {
		err = writeNew(crt, certPEM)
	}
	if err != nil {
		fmt.Fprintf(stderr, "homeserver: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n%s\n", crt, key)
	return 0
}

// writeNew creates a file with mode 0600; it fails if the file exists.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w (generate-ca does not overwrite files)", err)
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}
