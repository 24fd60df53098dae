package federation

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestEveryFederationEndpointIsAuthenticated walks the route table: every /_matrix/federation
// endpoint the spec does not list as unauthenticated must refuse an unsigned request with 401
// M_UNAUTHORIZED, so that an endpoint added later cannot forget the middleware.
func TestEveryFederationEndpointIsAuthenticated(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	a, err := New(Options{ServerName: "us.test", Version: "test", Key: signing.Key{ID: "ed25519:a", Private: priv},
		Config: config.Default().Federation, Store: storagetest.Open(t, "sqlite"), MaxBodyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	// Routes mounted by other packages (the media repository's) land in the authenticated group too.
	a.Routes(r, func(r chi.Router) {
		r.Get("/v1/media/download/{mediaId}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	})
	param := regexp.MustCompile(`\{[^}]*\}`)
	checked := 0
	err = chi.Walk(r, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(route, "/_matrix/federation/") || unauthenticated[method+" "+route] {
			return nil
		}
		checked++
		path := param.ReplaceAllString(route, "x")
		req := httptest.NewRequest(method, path, strings.NewReader(`{}`))
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		var body struct {
			Errcode string `json:"errcode"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != http.StatusUnauthorized || body.Errcode != "M_UNAUTHORIZED" {
			t.Errorf("unsigned %s %s: %d %s, want 401 M_UNAUTHORIZED", method, route, w.Code, w.Body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no authenticated federation endpoint found")
	}
}
