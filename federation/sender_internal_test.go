package federation

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hearthmx/homeserver/federation/fedclient"
)

func TestRefused(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New("connection refused"), false},
		{&fedclient.Error{Status: 500}, false},
		{&fedclient.Error{Status: 502}, false},
		{&fedclient.Error{Status: 401, Code: "M_UNAUTHORIZED"}, false},
		{&fedclient.Error{Status: 408}, false},
		{&fedclient.Error{Status: 429, Code: "M_LIMIT_EXCEEDED"}, false},
		{&fedclient.Error{Status: 400, Code: "M_BAD_JSON"}, true},
		{fmt.Errorf("send: %w", &fedclient.Error{Status: 403, Code: "M_FORBIDDEN"}), true},
		{&fedclient.Error{Status: 404, Code: "M_UNRECOGNIZED"}, true},
	} {
		if got := refused(c.err); got != c.want {
			t.Errorf("refused(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
