package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// pollConn is a receiver's own HTTP/1.1 connection for long polls, spoken directly rather than
// through net/http's client. The tool shares the machine with the server it measures, and at
// 1,000 long-polling receivers Go's client cost about as much CPU per response as the server did
// (a request, a transport round trip, header maps, a goroutine per connection): CPU taken from
// the server under test. This client writes one request and reads one response per poll on a
// kept-alive connection, and nothing else. It speaks only what a long poll needs: GET, a 200 or
// an error status, a Content-Length or chunked body, Connection: close. The fan-out's sender uses
// one too, for its PUTs (with a JSON body), so that a message's send stamp is taken right before
// its bytes are written, in the same goroutine (net/http's client hands a request to a writing
// and a reading goroutine of its own, each a wait for a core on a busy machine).
//
// Per poll it allocates nothing for timeouts or cancellation either (a context with a deadline
// and a callback per poll were a sixth of its CPU): the deadline is the connection's, and the
// connection is closed when the context it was opened under ends, by one callback per connection.
type pollConn struct {
	host string // host:port of the server
	conn net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte
	// ctx is the context the connection was opened under; stop unregisters its closing.
	ctx  context.Context
	stop func() bool
}

func newPollConn(base string) (*pollConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("long poll: %s: only http:// is spoken directly", base)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	return &pollConn{host: host}, nil
}

// get sends GET path with the token and returns a 200's body (valid until the next call) and
// when it had been read (on h's clock); other statuses are a *matrixError. The exchange must end
// within limit (none if 0). The connection is closed on any error, and when ctx ends.
func (p *pollConn) get(ctx context.Context, h *hs, path []byte, token string, limit time.Duration) ([]byte, time.Duration, error) {
	return p.do(ctx, h, "GET", path, token, nil, limit)
}

// do is get with any method and, when body is not nil, a JSON body.
func (p *pollConn) do(ctx context.Context, h *hs, method string, path []byte, token string, body []byte, limit time.Duration) ([]byte, time.Duration, error) {
	if p.conn != nil && p.ctx != ctx {
		p.close() // opened for another context: its closing would follow the wrong one
	}
	if p.conn == nil {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.host)
		if err != nil {
			return nil, 0, err
		}
		p.conn, p.br, p.ctx = c, bufio.NewReaderSize(c, 16<<10), ctx
		p.stop = context.AfterFunc(ctx, func() { c.Close() })
	}
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	err := p.conn.SetDeadline(deadline)
	var resp []byte
	var status int
	keep := false
	if err == nil {
		resp, status, keep, err = p.roundTrip(method, path, token, body)
	}
	at := h.now()
	if err != nil || !keep {
		p.close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, err
	}
	if status != 200 {
		return nil, 0, &matrixError{status: status, body: strings.TrimSpace(string(resp))}
	}
	return resp, at, nil
}

func (p *pollConn) close() {
	if p.conn != nil {
		p.stop()
		p.conn.Close()
		p.conn, p.br, p.ctx, p.stop = nil, nil, nil, nil
	}
}

// roundTrip writes the request and reads the response: its body, status, and whether the
// connection may be used again.
func (p *pollConn) roundTrip(method string, path []byte, token string, reqBody []byte) (body []byte, status int, keep bool, err error) {
	p.req = append(p.req[:0], method...)
	p.req = append(p.req, ' ')
	p.req = append(p.req, path...)
	p.req = append(p.req, " HTTP/1.1\r\nHost: "...)
	p.req = append(p.req, p.host...)
	p.req = append(p.req, "\r\nAuthorization: Bearer "...)
	p.req = append(p.req, token...)
	if reqBody != nil {
		p.req = append(p.req, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		p.req = strconv.AppendInt(p.req, int64(len(reqBody)), 10)
	}
	p.req = append(p.req, "\r\n\r\n"...)
	p.req = append(p.req, reqBody...)
	if _, err := p.conn.Write(p.req); err != nil {
		return nil, 0, false, err
	}
	line, err := p.line()
	if err != nil {
		return nil, 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return nil, 0, false, fmt.Errorf("long poll: bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return nil, 0, false, fmt.Errorf("long poll: bad status line %q", line)
	}
	length, chunked, keep := -1, false, true
	for {
		line, err := p.line()
		if err != nil {
			return nil, 0, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, 0, false, fmt.Errorf("long poll: bad header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > maxResponse {
				return nil, 0, false, fmt.Errorf("long poll: bad Content-Length %q", value)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "Connection"):
			keep = !asciiEqualFold(value, "close")
		}
	}
	switch {
	case chunked:
		err = p.readChunked()
	case length >= 0:
		p.body = grow(p.body[:0], length)
		_, err = io.ReadFull(p.br, p.body)
	default: // no length: the body ends with the connection
		p.body, err = io.ReadAll(io.LimitReader(p.br, maxResponse))
		keep = false
	}
	if err != nil {
		return nil, 0, false, err
	}
	return p.body, status, keep, nil
}

// readChunked reads a chunked body into p.body.
func (p *pollConn) readChunked() error {
	p.body = p.body[:0]
	for {
		line, err := p.line()
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 || int64(len(p.body))+n > maxResponse {
			return fmt.Errorf("long poll: bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, then the blank line
				line, err := p.line()
				if err != nil {
					return err
				}
				if len(line) == 0 {
					return nil
				}
			}
		}
		start := len(p.body)
		p.body = grow(p.body, int(n))
		if _, err := io.ReadFull(p.br, p.body[start:]); err != nil {
			return err
		}
		if crlf, err := p.line(); err != nil || len(crlf) != 0 {
			return errors.New("long poll: chunk not followed by CRLF")
		}
	}
}

// line reads one CRLF-terminated line, without it (valid until the next read).
func (p *pollConn) line() ([]byte, error) {
	line, err := p.br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")), nil
}

// grow extends b by n bytes (their content is to be overwritten).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n+len(b)/2)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
