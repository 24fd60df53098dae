package mediaapi

import (
	"crypto/rand"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// mxc is the URI of a media item.
func mxc(serverName, mediaID string) string { return "mxc://" + serverName + "/" + mediaID }

// newMediaID is 24 random characters of [A-Za-z0-9] (142 bits).
func newMediaID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	return randomString(alphabet, 24)
}

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	buf := make([]byte, n*2)
	for i := 0; i < n; {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			if int(c) < 256-256%len(alphabet) { // no modulo bias
				b[i] = alphabet[int(c)%len(alphabet)]
				i++
				if i == n {
					break
				}
			}
		}
	}
	return string(b)
}

// validMediaID applies the spec's rule: only A-Z, a-z, 0-9, "_" and "-" (so no ID can walk a
// path), and at most 255 characters.
func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range id {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// mediaRef reads and checks {serverName} and {mediaId} of the path.
func mediaRef(r *http.Request) (serverName, mediaID string, err error) {
	serverName, mediaID = pathParam(r, "serverName"), pathParam(r, "mediaId")
	if spec.ValidServerName(serverName) != nil {
		return "", "", spec.ErrInvalidParam.With("Invalid server name")
	}
	if !validMediaID(mediaID) {
		return "", "", spec.ErrInvalidParam.With("Invalid media ID")
	}
	return serverName, mediaID, nil
}

// pathParam is a path parameter, percent-decoded.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}
