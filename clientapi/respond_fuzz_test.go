package clientapi

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// FuzzDecode feeds arbitrary bodies to the request decoder: it must never panic, must answer every
// bad body with M_NOT_JSON or M_BAD_JSON, and must accept exactly the JSON objects that decode.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"a"},"password":"p"}`,
		`[]`, `"x"`, `{"password":1}`, `{"identifier":[]}`, `{`, ``, ` `, "\x00", `{"device_id":"\ud800"}`,
		`{"initial_device_display_name":null,"refresh_token":true}`, `{"refresh_token":"yes"}`, `1e999`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req loginRequest
		err := unmarshalObject(body, &req)
		if err == nil {
			var obj map[string]json.RawMessage
			if json.Unmarshal(body, &obj) != nil {
				t.Fatalf("accepted a body that is not a JSON object: %q", body)
			}
			return
		}
		var e *spec.Error
		if !errors.As(err, &e) {
			t.Fatalf("non-Matrix error %v for %q", err, body)
		}
		if e.Code != "M_NOT_JSON" && e.Code != "M_BAD_JSON" {
			t.Fatalf("errcode %s for %q", e.Code, body)
		}
		if e.Status != 400 {
			t.Fatalf("status %d for %q", e.Status, body)
		}
	})
}
