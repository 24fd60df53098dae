package federation

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/federation/fedclient"
)

// mediaAnswer builds a multipart/mixed media answer from its parts (headers, body).
func mediaAnswer(t *testing.T, parts ...[2]any) *http.Response {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		w, err := mw.CreatePart(p[0].(textproto.MIMEHeader))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(p[1].(string)))
	}
	_ = mw.Close()
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"multipart/mixed; boundary=" + mw.Boundary()}},
		Body: &trackedBody{Reader: &b}}
}

// trackedBody records whether it was closed and how much was read of it.
type trackedBody struct {
	io.Reader
	read   int64
	closed bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.read += int64(n)
	return n, err
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

var jsonPart = textproto.MIMEHeader{"Content-Type": {"application/json"}}

func noFollow(context.Context, string) (*http.Response, error) {
	return nil, errors.New("no Location expected")
}

// TestReadMediaAnswer: the multipart/mixed answer of /v1/media/download, with the content in the
// second part or behind a Location, and the answers that are not one.
func TestReadMediaAnswer(t *testing.T) {
	ctx := context.Background()
	content := "\x89PNG\r\n\x1a\n not really a PNG, \r\n--but with a line that looks like a boundary"
	resp := mediaAnswer(t, [2]any{jsonPart, "{}"}, [2]any{textproto.MIMEHeader{"Content-Type": {"image/png"},
		"Content-Disposition": {"attachment; filename*=utf-8''na%C3%AFve%20pic.png"}}, content})
	m, err := readMediaAnswer(ctx, resp, noFollow)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(m.Body)
	if string(data) != content || m.ContentType != "image/png" || m.FileName != "naïve pic.png" {
		t.Fatalf("content %q, type %q, name %q", data, m.ContentType, m.FileName)
	}
	if m.Body.Close(); !resp.Body.(*trackedBody).closed {
		t.Fatal("closing the content did not close the answer")
	}

	// The content elsewhere: followed, with that answer's type and name.
	resp = mediaAnswer(t, [2]any{jsonPart, `{"future": "metadata"}`},
		[2]any{textproto.MIMEHeader{"Location": {"https://cdn.example/media/abc?sig=1"}}, ""})
	var followed string
	cdn := &trackedBody{Reader: strings.NewReader("from the cdn")}
	m, err = readMediaAnswer(ctx, resp, func(_ context.Context, u string) (*http.Response, error) {
		followed = u
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"image/jpeg"},
			"Content-Disposition": {`inline; filename="cat.jpg"`}}, Body: cdn}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(m.Body)
	m.Body.Close()
	if followed != "https://cdn.example/media/abc?sig=1" || string(data) != "from the cdn" || m.ContentType != "image/jpeg" ||
		m.FileName != "cat.jpg" || !cdn.closed || !resp.Body.(*trackedBody).closed {
		t.Fatalf("Location: followed %q, content %q, type %q, name %q, closed %v %v", followed, data, m.ContentType, m.FileName,
			cdn.closed, resp.Body.(*trackedBody).closed)
	}
	// A Location that cannot be fetched fails the download.
	resp = mediaAnswer(t, [2]any{jsonPart, "{}"}, [2]any{textproto.MIMEHeader{"Location": {"http://cdn.example/x"}}, ""})
	if _, err := readMediaAnswer(ctx, resp, func(context.Context, string) (*http.Response, error) {
		return nil, errors.New("refused")
	}); err == nil || !resp.Body.(*trackedBody).closed {
		t.Fatalf("unreachable Location: %v", err)
	}

	bad := map[string]*http.Response{
		"JSON, not multipart": {Header: http.Header{"Content-Type": {"application/json"}}, Body: &trackedBody{Reader: strings.NewReader("{}")}},
		"no boundary":         {Header: http.Header{"Content-Type": {"multipart/mixed"}}, Body: &trackedBody{Reader: strings.NewReader("")}},
		"one part":            mediaAnswer(t, [2]any{jsonPart, "{}"}),
		"metadata not JSON":   mediaAnswer(t, [2]any{jsonPart, "nope"}, [2]any{textproto.MIMEHeader{}, "x"}),
		"metadata an array":   mediaAnswer(t, [2]any{jsonPart, "[]"}, [2]any{textproto.MIMEHeader{}, "x"}),
		"metadata too large": mediaAnswer(t, [2]any{jsonPart, `{"a":"` + strings.Repeat("x", maxMediaMetadataBytes) + `"}`},
			[2]any{textproto.MIMEHeader{}, "x"}),
		"cut off": func() *http.Response {
			r := mediaAnswer(t, [2]any{jsonPart, "{}"}, [2]any{textproto.MIMEHeader{}, "x"})
			data, _ := io.ReadAll(r.Body)
			r.Body = &trackedBody{Reader: bytes.NewReader(data[:bytes.Index(data, []byte("{}"))])}
			return r
		}(),
	}
	for name, resp := range bad {
		if _, err := readMediaAnswer(ctx, resp, noFollow); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !resp.Body.(*trackedBody).closed {
			t.Errorf("%s: answer left open", name)
		}
	}
}

// TestMediaOverSize: the body yields one byte past maxBytes (so the caller sees it is too
// large) and stops reading the answer soon after.
func TestMediaOverSize(t *testing.T) {
	const maxBytes = 1000
	head := mediaAnswer(t, [2]any{jsonPart, "{}"}, [2]any{textproto.MIMEHeader{"Content-Type": {"application/octet-stream"}}, ""})
	raw, _ := io.ReadAll(head.Body)
	// The answer never ends: the part's closing boundary is cut off, an endless body follows.
	raw = raw[:bytes.LastIndex(raw, []byte("\r\n--"))]
	src := &trackedBody{Reader: io.MultiReader(bytes.NewReader(raw), endless{})}
	head.Body = src
	m, err := readMediaAnswer(context.Background(), head, noFollow)
	if err != nil {
		t.Fatal(err)
	}
	m.Body = limitedBody(m.Body, maxBytes)
	data, err := io.ReadAll(m.Body)
	if err != nil || len(data) != maxBytes+1 {
		t.Fatalf("read %d bytes (%v), want %d", len(data), err, maxBytes+1)
	}
	if src.read > maxBytes+64<<10 {
		t.Fatalf("%d bytes of the answer read for a limit of %d", src.read, maxBytes)
	}
	m.Body.Close()
	if !src.closed {
		t.Fatal("answer left open")
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// TestMediaFallback: which answers make the download fall back to the deprecated endpoint, and
// which mean the media does not exist.
func TestMediaFallback(t *testing.T) {
	for _, c := range []struct {
		status   int
		code     string
		fallback bool
		notFound bool
	}{
		{404, "M_UNRECOGNIZED", true, true},
		{404, "", true, true},
		{405, "", true, false},
		{405, "M_UNRECOGNIZED", true, false},
		{400, "M_UNRECOGNIZED", true, false},
		{400, "M_INVALID_PARAM", false, false},
		{404, "M_NOT_FOUND", false, true},
		{403, "M_FORBIDDEN", false, false},
		{502, "M_TOO_LARGE", false, false},
	} {
		e := &fedclient.Error{Status: c.status, Code: c.code}
		if got := unrecognised(e); got != c.fallback {
			t.Errorf("%d %s: fallback %v, want %v", c.status, c.code, got, c.fallback)
		}
		if got := errors.Is(mediaError(e), ErrMediaNotFound); got != c.notFound {
			t.Errorf("%d %s: not found %v, want %v", c.status, c.code, got, c.notFound)
		}
	}
}
