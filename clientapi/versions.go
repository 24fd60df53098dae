package clientapi

import (
	"net/http"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// specVersions are the spec versions whose endpoints this server serves.
var specVersions = []string{
	"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// versions is GET /_matrix/client/versions.
func (a *API) versions(_ *http.Request) (any, error) {
	return map[string]any{
		"versions": specVersions,
		"unstable_features": map[string]bool{
			"dev.hearth.sync_sse": true, // GET /_matrix/client/unstable/dev.hearth/sync/sse (docs/sync.md)
			"dev.hearth.sync_ws":  true, // GET /_matrix/client/unstable/dev.hearth/sync/ws (docs/sync.md)
			"org.matrix.msc3814":  true, // dehydrated devices under /_matrix/client/unstable/org.matrix.msc3814.v1 (docs/e2ee.md)
		},
	}, nil
}

// wellKnownClient is GET /.well-known/matrix/client.
func (a *API) wellKnownClient(_ *http.Request) (any, error) {
	return map[string]any{"m.homeserver": map[string]string{"base_url": a.cfg.BaseURL()}}, nil
}

// wellKnownServer is GET /.well-known/matrix/server: where other servers reach our federation API.
func (a *API) wellKnownServer(_ *http.Request) (any, error) {
	return map[string]string{"m.server": a.cfg.WellKnownServer()}, nil
}

// wellKnownSupport is GET /.well-known/matrix/support: the contacts and page of
// well_known.support_*; M_NOT_FOUND when none is configured.
func (a *API) wellKnownSupport(_ *http.Request) (any, error) {
	type contact struct {
		MatrixID     string `json:"matrix_id,omitempty"`
		EmailAddress string `json:"email_address,omitempty"`
		Role         string `json:"role"`
	}
	var out struct {
		Contacts    []contact `json:"contacts,omitempty"`
		SupportPage string    `json:"support_page,omitempty"`
	}
	wk := a.cfg.WellKnown
	for _, group := range []struct {
		role     string
		contacts []string
	}{{"m.role.admin", wk.SupportAdmins}, {"m.role.security", wk.SupportSecurity}} {
		for _, v := range group.contacts {
			if strings.HasPrefix(v, "@") {
				out.Contacts = append(out.Contacts, contact{MatrixID: v, Role: group.role})
			} else {
				out.Contacts = append(out.Contacts, contact{EmailAddress: v, Role: group.role})
			}
		}
	}
	out.SupportPage = wk.SupportPage
	if len(out.Contacts) == 0 && out.SupportPage == "" {
		return nil, spec.ErrNotFound.With("No support information is configured")
	}
	return out, nil
}

// capabilities is GET /_matrix/client/v3/capabilities.
func (a *API) capabilities(_ *http.Request) (any, error) {
	available := make(map[string]string, len(config.RoomVersionsSupported))
	for _, v := range config.RoomVersionsSupported {
		available[v] = "stable"
	}
	return map[string]any{"capabilities": map[string]any{
		"m.change_password": map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
		"m.profile_fields":  map[string]any{"enabled": true},
		"m.room_versions":   map[string]any{"default": a.cfg.RoomVersions.Default, "available": available},
	}}, nil
}
