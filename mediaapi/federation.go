package mediaapi

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The content repository of the server-server API (spec: server-server "Content Repository"):
// other servers download this server's media, and thumbnails of it. The federation API mounts
// these routes in its X-Matrix-authenticated group; only media uploaded here is served (the
// path names no server: media this server cached from others is theirs to serve).
//
// The answer is multipart/mixed: a JSON part ({}, the metadata the spec leaves empty for now),
// then the content with its Content-Type and Content-Disposition, streamed from the blob store.

// FederationRoutes mounts GET /v1/media/download/{mediaId} and /v1/media/thumbnail/{mediaId} on
// r, the /_matrix/federation router behind the federation API's authentication.
func (a *API) FederationRoutes(r chi.Router) {
	r.Get("/v1/media/download/{mediaId}", a.serveRaw(a.federationDownload))
	r.Get("/v1/media/thumbnail/{mediaId}", a.serveRaw(a.federationThumbnail))
}

// federationDownload is GET /_matrix/federation/v1/media/download/{mediaId}?timeout_ms.
func (a *API) federationDownload(w http.ResponseWriter, r *http.Request) error {
	m, err := a.localMedia(r)
	if err != nil {
		return err
	}
	blob, err := a.openBlob(r.Context(), m.SHA256)
	if err != nil {
		return err
	}
	defer blob.Close()
	a.writeMultipart(w, r, m.ContentType, m.FileName, inlineTypes[mediaType(m.ContentType)], blob, blob.Size())
	return nil
}

// federationThumbnail is GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width&height&
// method&animated&timeout_ms: the thumbnail the client endpoint would answer (stored or made
// now, same sizes and limits).
func (a *API) federationThumbnail(w http.ResponseWriter, r *http.Request) error {
	size, err := thumbnailParams(r)
	if err != nil {
		return err
	}
	m, err := a.localMedia(r)
	if err != nil {
		return err
	}
	t, data, err := a.thumbnailOf(r.Context(), m, size)
	if err != nil {
		return err
	}
	name := "thumbnail." + filenameExt(t.ContentType)
	if data != nil { // made for this request only
		a.writeMultipart(w, r, t.ContentType, name, true, bytes.NewReader(data), int64(len(data)))
		return nil
	}
	blob, err := a.openBlob(r.Context(), t.SHA256)
	if err != nil {
		return err
	}
	defer blob.Close()
	a.writeMultipart(w, r, t.ContentType, name, true, blob, blob.Size())
	return nil
}

// localMedia is the media item of this server that {mediaId} names, waiting up to timeout_ms for
// an asynchronous upload like the client endpoints.
func (a *API) localMedia(r *http.Request) (storage.Media, error) {
	mediaID := pathParam(r, "mediaId")
	if !validMediaID(mediaID) {
		return storage.Media{}, spec.ErrInvalidParam.With("Invalid media ID")
	}
	// Authenticated: the freeze of the deprecated endpoints does not apply to servers.
	return a.lookup(r, a.serverName, mediaID, authenticated)
}

// writeMultipart sends the two parts with a Content-Length: the prefix (boundary, the JSON
// part, the content part's headers) and the closing delimiter are built first, the content is
// copied between them.
func (a *API) writeMultipart(w http.ResponseWriter, r *http.Request, ctype, fileName string, inline bool, content io.Reader, size int64) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}}) // writes to buf: cannot fail
	_, _ = meta.Write([]byte("{}"))
	if mediaType(ctype) == "" || strings.ContainsAny(ctype, "\r\n") { // part headers are written as they are
		ctype = "application/octet-stream"
	}
	disp := "attachment"
	if inline {
		disp = "inline"
	}
	// The content part's headers are written by hand, Content-Type first: CreatePart sorts them
	// (Content-Disposition first), and Synapse's multipart reader then takes the disposition for
	// the content type and loses the file name (issue 7, interoperability).
	fmt.Fprintf(&buf, "\r\n--%s\r\nContent-Type: %s\r\nContent-Disposition: %s\r\n\r\n",
		mw.Boundary(), ctype, contentDisposition(disp, fileName))
	prefix := buf.Len()
	_ = mw.Close()
	head, tail := buf.Bytes()[:prefix], buf.Bytes()[prefix:]

	h := w.Header()
	h.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	h.Set("Content-Length", strconv.FormatInt(int64(len(head))+size+int64(len(tail)), 10))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(head); err != nil {
		return
	}
	if n, err := io.Copy(w, content); err != nil || n != size {
		// The answer is cut short (the Content-Length tells the other server so).
		if r.Context().Err() == nil {
			a.log.WarnContext(r.Context(), "media: federation download cut short", "copied", n, "size", size, "err", err)
		}
		return
	}
	_, _ = w.Write(tail)
}
