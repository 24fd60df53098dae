package federation

import (
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"
)

// unescapePathParams percent-decodes the route's path parameters in place, for every handler and
// middleware after it (aclGuard included).
//
// chi matches on the escaped path (r.URL.RawPath) whenever the sender escaped a character that
// Go would not: Synapse sends /make_join/%21room%3Aserver/%40user%3Aserver, Go's url.PathEscape
// leaves '!', ':' and '@' alone. Without this the handlers saw "%40user%3Aserver" and refused the
// join of every Synapse user (issue 7, interoperability). When RawPath is empty chi matched on
// the already decoded r.URL.Path, and decoding again would turn a literal "%41" into "A".
func unescapePathParams(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rctx := chi.RouteContext(r.Context()); rctx != nil && r.URL.RawPath != "" {
			for i, v := range rctx.URLParams.Values {
				if u, err := url.PathUnescape(v); err == nil {
					rctx.URLParams.Values[i] = u
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
