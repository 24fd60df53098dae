// Package fedclient sends server-server requests: it resolves the destination's server name
// (federation/resolve), connects over TLS verifying the certificate against the resolved name,
// signs every request with the X-Matrix scheme (federation/xmatrix), and turns Matrix error
// responses into errors.
package fedclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/federation/resolve"
	"github.com/hearthmx/homeserver/federation/xmatrix"
	"github.com/hearthmx/homeserver/homeserver/netguard"
	"github.com/hearthmx/homeserver/homeserver/signing"
)

// Options configure a Client.
type Options struct {
	// ServerName and Key are ours: requests are signed as ServerName with Key.
	ServerName string
	Key        signing.Key
	// RootCAs verify the certificates of other servers; nil uses the system's roots (which
	// honour SSL_CERT_FILE and SSL_CERT_DIR).
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts any certificate. For local tests only: it lets anyone on the
	// path impersonate any server.
	InsecureSkipVerify bool
	// DNS answers SRV and address lookups; nil uses net.DefaultResolver.
	DNS resolve.DNS
	// Guard decides which IP addresses may be dialled; nil refuses what netguard refuses by
	// default (loopback, private, link-local, ...).
	Guard func(netip.Addr) error
	// Dial opens a TCP connection to an IP:port; nil uses a net.Dialer (tests redirect it).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds a whole request, response body included; 0 is one minute.
	Timeout time.Duration
	// MaxResponseBytes is the largest response body read; 0 is 64 MiB.
	MaxResponseBytes int64
	Log              *slog.Logger
}

// Defaults of Options.
const (
	DefaultTimeout          = time.Minute
	DefaultMaxResponseBytes = 64 << 20
	dialTimeout             = 10 * time.Second
	handshakeTimeout        = 10 * time.Second
)

// Client sends federation requests. It is safe for concurrent use.
type Client struct {
	serverName string
	key        signing.Key
	resolver   *resolve.Resolver
	http       *http.Client
	// plain fetches URLs other servers point to (FetchURL): unsigned, through the same guard.
	plain    *http.Client
	timeout  time.Duration
	maxBytes int64
	log      *slog.Logger
}

// New builds a Client.
func New(o Options) *Client {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.DNS == nil {
		o.DNS = net.DefaultResolver
	}
	if o.Guard == nil {
		g, _ := netguard.New(nil) // no allowed networks: cannot fail
		o.Guard = g.Check
	}
	if o.Dial == nil {
		// The dialer hands it IP addresses only, each checked by the guard first.
		o.Dial = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	tlsConfig := &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // a test-only switch, logged loudly
	if o.InsecureSkipVerify {
		o.Log.Warn("federation: TLS CERTIFICATES OF OTHER SERVERS ARE NOT VERIFIED (federation.tls.insecure_skip_verify): " +
			"anyone on the network path can impersonate any server. Use this for local tests only.")
	}
	d := &dialer{dns: o.DNS, guard: o.Guard, raw: o.Dial}
	// Well-known lookups are plain HTTPS to the server name's host on port 443.
	wellKnownTransport := &http.Transport{
		DialContext:         d.dial,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: handshakeTimeout,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}
	c := &Client{
		serverName: o.ServerName,
		key:        o.Key,
		resolver:   resolve.New(resolve.Options{DNS: o.DNS, Transport: wellKnownTransport, Log: o.Log}),
		timeout:    o.Timeout,
		maxBytes:   o.MaxResponseBytes,
		log:        o.Log,
	}
	// Federation requests: the URL host is the destination's server name (connKey); the dialer
	// resolves it and verifies the certificate against the resolved TLS name.
	c.http = &http.Client{
		Transport: &http.Transport{
			DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				name, err := serverNameOf(addr)
				if err != nil {
					return nil, err
				}
				res, err := c.resolver.Resolve(ctx, name)
				if err != nil {
					return nil, err
				}
				conn, err := d.dialTLS(ctx, res, tlsConfig, handshakeTimeout)
				if err != nil {
					c.resolver.Forget(name) // resolve again next time: the target may have moved
				}
				return conn, err
			},
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: o.Timeout,
		},
		// Federation endpoints do not redirect; following one would send the signed request elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.plain = &http.Client{
		Transport: &http.Transport{
			DialContext:           d.dial,
			TLSClientConfig:       tlsConfig,
			TLSHandshakeTimeout:   handshakeTimeout,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: o.Timeout,
		},
		CheckRedirect: checkPlainRedirect,
	}
	return c
}

// Resolver is the client's server name resolver.
func (c *Client) Resolver() *resolve.Resolver { return c.resolver }

// Error is a non-2xx answer of another server.
type Error struct {
	Destination string
	Method      string
	Path        string
	Status      int
	// Code and Message are the errcode and error of a Matrix error body ("" otherwise).
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s %s on %s: %d %s: %s", e.Method, e.Path, e.Destination, e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("%s %s on %s: status %d", e.Method, e.Path, e.Destination, e.Status)
}

// ErrTooLarge is matched by the error for a response over the size limit.
var ErrTooLarge = errors.New("federation response too large")

// Do sends a signed request to destination and returns the body of a 2xx response. path starts
// with /_matrix/ and is escaped as it goes on the wire, query string included. body is nil (no
// body), a []byte or json.RawMessage of JSON, or a value to encode as JSON. A non-2xx response
// is an *Error.
func (c *Client) Do(ctx context.Context, destination, method, path string, body any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, destination, method, path, body, true)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("federation: %s %s on %s: read response: %w", method, path, destination, err)
	}
	if int64(len(data)) > c.maxBytes {
		return nil, fmt.Errorf("federation: %s %s on %s: %w (over %d bytes)", method, path, destination, ErrTooLarge, c.maxBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, errorOf(destination, method, path, resp.StatusCode, data)
	}
	return data, nil
}

// send resolves destination and sends the request (signed if sign), returning the response
// whatever its status.
func (c *Client) send(ctx context.Context, destination, method, path string, body any, sign bool) (*http.Response, error) {
	name, err := resolve.ParseServerName(destination)
	if err != nil {
		return nil, fmt.Errorf("federation: destination %q: %w", destination, err)
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("federation: path %q does not start with /", path)
	}
	var content []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		content = b
	case json.RawMessage:
		content = b
	default:
		if content, err = json.Marshal(b); err != nil {
			return nil, fmt.Errorf("federation: encode request body: %w", err)
		}
	}
	res, err := c.resolver.Resolve(ctx, destination)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if content != nil {
		rd = bytes.NewReader(content)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+connKey(name)+path, rd)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	req.Host = res.Host
	if sign {
		auth, err := xmatrix.Sign(xmatrix.Request{Method: method, URI: req.URL.RequestURI(), Origin: c.serverName,
			Destination: destination, Content: content}, c.key.ID, c.key.Private)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", auth)
	}
	if content != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "hearth")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("federation: %s %s on %s: %w", method, path, destination, err)
	}
	return resp, nil
}

// errorOf is the *Error of a non-2xx answer with body data.
func errorOf(destination, method, path string, status int, data []byte) *Error {
	e := &Error{Destination: destination, Method: method, Path: path, Status: status}
	var m struct {
		Code    string `json:"errcode"`
		Message string `json:"error"`
	}
	if json.Unmarshal(data, &m) == nil {
		e.Code, e.Message = m.Code, m.Message
	}
	return e
}

// DoJSON is Do that decodes the response into out.
func (c *Client) DoJSON(ctx context.Context, destination, method, path string, body, out any) error {
	data, err := c.Do(ctx, destination, method, path, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("federation: %s %s on %s: response is not the expected JSON: %w", method, path, destination, err)
	}
	return nil
}
