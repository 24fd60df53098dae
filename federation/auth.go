package federation

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/hearthmx/homeserver/federation/xmatrix"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

type originKey struct{}

// Origin is the server that signed the request (set by the authentication middleware).
func Origin(ctx context.Context) string {
	s, _ := ctx.Value(originKey{}).(string)
	return s
}

// authenticate is the X-Matrix middleware (server-server API, "Request Authentication"): the
// request must carry a valid signature by a current key of its origin, over its method, target,
// our server name as destination and its JSON body. Anything else is 401 M_UNAUTHORIZED (a
// body that is not JSON, 400 M_NOT_JSON). The handler finds the origin with Origin(ctx), and
// the body, read once here, still in r.Body.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Body != nil && r.Body != http.NoBody {
			var err error
			body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					write(w, http.StatusRequestEntityTooLarge, spec.ErrTooLarge.Withf("Request body is larger than %d bytes", a.maxBody))
					return
				}
				write(w, http.StatusBadRequest, spec.ErrBadJSON.With("Could not read the request body"))
				return
			}
		}
		origin, err := xmatrix.Verify(r.Context(), xmatrix.Request{Method: r.Method, URI: r.RequestURI, Content: body},
			r.Header.Values("Authorization"), a.serverName, a.keys.RequestKey)
		if err != nil {
			a.log.Debug("federation: request refused", "method", r.Method, "uri", r.RequestURI, "err", err)
			if errors.Is(err, xmatrix.ErrNotJSON) {
				write(w, http.StatusBadRequest, spec.ErrNotJSON.With("The request body is not JSON"))
				return
			}
			write(w, http.StatusUnauthorized, spec.ErrUnauthorized.With(unauthorizedMessage(err)))
			return
		}
		if a.sender != nil {
			a.sender.Alive(origin) // it answers requests again: retry what waits for it now
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
	})
}

// unauthorizedMessage tells the other server's admin what was wrong, without internal detail.
func unauthorizedMessage(err error) string {
	switch {
	case errors.Is(err, xmatrix.ErrMissing):
		return "Missing X-Matrix Authorization header"
	case errors.Is(err, xmatrix.ErrMalformed):
		return "Malformed X-Matrix Authorization header"
	case errors.Is(err, xmatrix.ErrWrongDestination):
		return "The request is for another server (destination)"
	case errors.Is(err, xmatrix.ErrUnknownKey):
		return "Unknown or unreachable signing key of the origin"
	}
	return "Invalid request signature"
}
