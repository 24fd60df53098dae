package clientapi

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/filter"
)

// syncQueries are queries of /sync as clients send them, and odd ones: repeated, empty, escaped
// and malformed parameters.
var syncQueries = []string{
	"",
	"since=s12_3_4_0_0_0_7&timeout=30000&filter=2",
	"filter=0&since=s1_2_3&timeout=0&full_state=true&set_presence=offline",
	"since=a&since=b&timeout=1&timeout=2",
	"since=&since=b",
	"since&timeout",
	"&&since=x&&",
	"=x&since=y",
	"filter=%7B%22room%22%3A%7B%7D%7D&since=s1",
	"since=s1+2",
	"since=s%zz&since=ok",
	"sinc%65=escaped-key",
	"since=a;b&since=c",
	"since=x=y&filter==",
	"SINCE=upper&since=lower",
	"set_presence=online&other=1&full_state=false",
	strings.Repeat("x=1&", 100) + "since=late",
}

// TestParseSyncParams: the /sync parameters read from the raw query are those net/url reads.
func TestParseSyncParams(t *testing.T) {
	for _, raw := range syncQueries {
		checkSyncParams(t, raw)
	}
}

// FuzzParseSyncParams holds parseSyncParams to url.ParseQuery's answer.
func FuzzParseSyncParams(f *testing.F) {
	for _, raw := range syncQueries {
		f.Add(raw)
	}
	f.Fuzz(checkSyncParams)
}

func checkSyncParams(t *testing.T, raw string) {
	q, _ := url.ParseQuery(raw)
	if got, want := parseSyncParams(raw), syncParamsOf(q); got != want {
		t.Errorf("query %q: got %+v, want %+v", raw, got, want)
	}
}

// SyncFilter is syncFilter for the external tests.
func (a *API) SyncFilter(ctx context.Context, localpart, raw string) (filter.Filter, error) {
	return a.syncFilter(ctx, localpart, raw)
}
