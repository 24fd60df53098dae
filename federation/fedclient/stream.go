package fedclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Responses too large to hold in memory (media) are streamed: Stream, StreamUnsigned and
// FetchURL return the *http.Response of a 2xx answer with its body unread. The caller reads it
// (bounding what it reads) and closes it. The answer's headers must arrive within the client's
// timeout; the body is bounded only by ctx, so a large file can take longer than one request.

// maxErrorBytes is how much of a non-2xx answer is read for its Matrix error.
const maxErrorBytes = 64 << 10

// maxPlainRedirects is how many redirects FetchURL follows.
const maxPlainRedirects = 5

// Stream sends a signed request like Do and returns the response of a 2xx answer unread. A
// non-2xx answer is an *Error.
func (c *Client) Stream(ctx context.Context, destination, method, path string, body any) (*http.Response, error) {
	return c.stream(ctx, method, path, destination, func(ctx context.Context) (*http.Response, error) {
		return c.send(ctx, destination, method, path, body, true)
	})
}

// StreamUnsigned is Stream of a GET without the X-Matrix signature, for the endpoints other
// servers serve to anyone (the deprecated /_matrix/media/v3/download).
func (c *Client) StreamUnsigned(ctx context.Context, destination, path string) (*http.Response, error) {
	return c.stream(ctx, http.MethodGet, path, destination, func(ctx context.Context) (*http.Response, error) {
		return c.send(ctx, destination, http.MethodGet, path, nil, false)
	})
}

// FetchURL GETs an https URL another server pointed to (the Location of a media download): not
// signed, not resolved as a server name, but every address checked by the guard like federation
// requests, the certificate verified with the same roots, at most 5 redirects (https only).
// A non-2xx answer is an *Error whose Destination is the URL's host.
func (c *Client) FetchURL(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("federation: fetch %q: %w", rawURL, err)
	}
	if req.URL.Scheme != "https" || req.URL.Host == "" {
		return nil, fmt.Errorf("federation: fetch %q: only https URLs are followed", rawURL)
	}
	req.Header.Set("User-Agent", "hearth")
	return c.stream(ctx, http.MethodGet, req.URL.Path, req.URL.Host, func(ctx context.Context) (*http.Response, error) {
		resp, err := c.plain.Do(req.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("federation: fetch %s: %w", req.URL.Redacted(), err)
		}
		return resp, nil
	})
}

func checkPlainRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxPlainRedirects { // via: the first request and the redirects so far
		return fmt.Errorf("more than %d redirects", maxPlainRedirects)
	}
	if req.URL.Scheme != "https" {
		return errors.New("redirect to a URL that is not https")
	}
	return nil
}

// stream runs do with a context that the client's timeout cancels until the answer's headers
// are in, and that closing the body cancels afterwards.
func (c *Client) stream(ctx context.Context, method, path, destination string, do func(context.Context) (*http.Response, error)) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(c.timeout, func() { cancel(context.DeadlineExceeded) })
	resp, err := do(ctx)
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded // fired as the headers came: the body would be cut short
	}
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		cancel(nil)
		if cause := context.Cause(ctx); errors.Is(cause, context.DeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		resp.Body.Close()
		cancel(nil)
		return nil, errorOf(destination, method, path, resp.StatusCode, data)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// cancelOnClose releases a streamed response's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
