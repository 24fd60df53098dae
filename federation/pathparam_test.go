package federation

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestUnescapePathParams: parameters arrive decoded whether the sender escaped more than Go
// would (Synapse: %40, %3A, %21, %24) or not, a literal '%' is decoded once only, and an escaped
// '/' stays inside its parameter.
func TestUnescapePathParams(t *testing.T) {
	r := chi.NewRouter()
	r.Group(func(r chi.Router) {
		r.Use(unescapePathParams)
		r.Get("/x/{a}/{b}", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, chi.URLParam(r, "a")+" "+chi.URLParam(r, "b"))
		})
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ path, want string }{
		{"/x/%21room%3Ahs.example/%40bob%3Ahs.example", "!room:hs.example @bob:hs.example"},
		{"/x/!room:hs.example/@bob:hs.example", "!room:hs.example @bob:hs.example"},
		{"/x/%24event/%40bob%3A127.0.0.3%3A8448", "$event @bob:127.0.0.3:8448"},
		{"/x/t%2541/b", "t%41 b"},             // what Go itself sends for "t%41": not decoded twice
		{"/x/%21r%3Ahs/t%2541", "!r:hs t%41"}, // the same within an escaped path
		{"/x/a%2Fb/c", "a/b c"},
	} {
		res, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("%s: %d %q, want %q", tc.path, res.StatusCode, body, tc.want)
		}
	}
}
