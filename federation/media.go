package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"

	"github.com/hearthmx/homeserver/federation/fedclient"
)

// Media of other servers (server-server API, "Content Repository"): DownloadMedia gets the
// content of mxc://{serverName}/{mediaId} from serverName for the media repository, which
// caches it (the composition root hands it to mediaapi as its RemoteFetcher). Serving this
// server's media to others is mediaapi's (mediaapi/federation.go), mounted by Routes.
//
//	GET /_matrix/federation/v1/media/download/{mediaId}     signed; multipart/mixed answer
//	  404 M_UNRECOGNIZED, 405, 400 M_UNRECOGNIZED (a server older than Matrix 1.11):
//	GET /_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false   unsigned
//
// The content part of the answer is the media, or a Location to GET it from (plain HTTPS,
// through the same address guard, FetchURL). Thumbnails of remote media are made here from the
// cached content (mediaapi), so /media/thumbnail is never asked.

// Media is content being downloaded from another server. The caller reads Body and closes it.
type Media struct {
	ContentType string
	FileName    string
	Body        io.ReadCloser
}

// ErrMediaNotFound is wrapped by DownloadMedia's error when the server has no such media.
var ErrMediaNotFound = errors.New("federation: remote media not found")

// maxMediaMetadataBytes bounds the JSON part of a media answer (an empty object today).
const maxMediaMetadataBytes = 64 << 10

// DownloadMedia downloads mxc://serverName/mediaID from serverName. Body yields at most
// maxBytes+1 bytes, so that a caller reading up to its limit sees content that is too large
// without more of it being read.
func (a *API) DownloadMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (*Media, error) {
	if serverName == a.serverName {
		return nil, fmt.Errorf("federation: media of %s is this server's: %w", serverName, ErrMediaNotFound)
	}
	resp, err := a.client.Stream(ctx, serverName, http.MethodGet, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID), nil)
	var fe *fedclient.Error
	if errors.As(err, &fe) && unrecognised(fe) {
		return a.downloadLegacyMedia(ctx, serverName, mediaID, maxBytes)
	}
	if err != nil {
		return nil, mediaError(err)
	}
	m, err := readMediaAnswer(ctx, resp, a.client.FetchURL)
	if err != nil {
		return nil, fmt.Errorf("federation: media %s/%s: %w", serverName, mediaID, err)
	}
	m.Body = limitedBody(m.Body, maxBytes)
	return m, nil
}

// downloadLegacyMedia is the fallback for servers that predate the federation media endpoints:
// the deprecated client endpoint, unauthenticated, told not to fetch from elsewhere.
func (a *API) downloadLegacyMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (*Media, error) {
	path := "/_matrix/media/v3/download/" + url.PathEscape(serverName) + "/" + url.PathEscape(mediaID) + "?allow_remote=false"
	resp, err := a.client.StreamUnsigned(ctx, serverName, path)
	if err != nil {
		return nil, mediaError(err)
	}
	return &Media{ContentType: resp.Header.Get("Content-Type"), FileName: fileNameOf(resp.Header.Get("Content-Disposition")),
		Body: limitedBody(resp.Body, maxBytes)}, nil
}

// unrecognised tells a server that does not know the endpoint (the spec: 404 M_UNRECOGNIZED; 405
// and 400 M_UNRECOGNIZED from older servers; a 404 that is no Matrix error, from a proxy or
// router in front of one) from one that does not have the media (404 M_NOT_FOUND).
func unrecognised(e *fedclient.Error) bool {
	switch e.Status {
	case http.StatusMethodNotAllowed:
		return true
	case http.StatusNotFound:
		return e.Code == "M_UNRECOGNIZED" || e.Code == ""
	case http.StatusBadRequest:
		return e.Code == "M_UNRECOGNIZED"
	}
	return false
}

// mediaError marks a 404 as ErrMediaNotFound.
func mediaError(err error) error {
	var fe *fedclient.Error
	if errors.As(err, &fe) && fe.Status == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrMediaNotFound, err)
	}
	return err
}

// readMediaAnswer reads a multipart/mixed media answer up to its content part: the JSON object,
// then the content (its Content-Type and Content-Disposition), or a Location fetched with
// follow. The returned body closes resp's.
func readMediaAnswer(ctx context.Context, resp *http.Response, follow func(context.Context, string) (*http.Response, error)) (*Media, error) {
	ok := false
	defer func() {
		if !ok {
			resp.Body.Close()
		}
	}()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("the answer is %q, not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("metadata part: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(meta, maxMediaMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("metadata part: %w", err)
	}
	var obj map[string]json.RawMessage
	if len(raw) > maxMediaMetadataBytes || json.Unmarshal(raw, &obj) != nil || obj == nil {
		return nil, errors.New("the metadata part is not a JSON object")
	}
	content, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("content part: %w", err)
	}
	if loc := content.Header.Get("Location"); loc != "" {
		// The rest of the answer is of no use. follow refuses anything but an absolute https URL.
		ok = true
		resp.Body.Close()
		r, err := follow(ctx, loc)
		if err != nil {
			return nil, fmt.Errorf("following the Location: %w", err)
		}
		return &Media{ContentType: r.Header.Get("Content-Type"), FileName: fileNameOf(r.Header.Get("Content-Disposition")), Body: r.Body}, nil
	}
	ok = true
	return &Media{ContentType: content.Header.Get("Content-Type"), FileName: fileNameOf(content.Header.Get("Content-Disposition")),
		Body: partBody{Reader: content, closer: resp.Body}}, nil
}

// fileNameOf is the file name of a Content-Disposition ("" if none): filename*, decoded, or else
// filename.
func fileNameOf(disposition string) string {
	if disposition == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// partBody reads a part and closes the whole answer.
type partBody struct {
	io.Reader
	closer io.Closer
}

func (b partBody) Close() error { return b.closer.Close() }

// limitedBody reads at most maxBytes+1 bytes of body.
func limitedBody(body io.ReadCloser, maxBytes int64) io.ReadCloser {
	if maxBytes <= 0 {
		return body
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(body, maxBytes+1), body}
}
