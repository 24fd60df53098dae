package sync

import (
	"testing"

	"github.com/hearthmx/homeserver/homeserver/filter"
)

// TestPlanCache: a filter's plan is made once and found again by the identity of the filter's
// parts, whichever filter was asked for last.
func TestPlanCache(t *testing.T) {
	var c planCache
	parse := func(raw string) filter.Filter {
		f, err := filter.Parse([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a, b := parse(`{"room":{"timeline":{"limit":7}}}`), parse(`{"room":{"timeline":{"limit":8}}}`)
	pa := c.of(a)
	if pa.limit != 7 || c.of(a) != pa {
		t.Fatalf("plan of a: limit %d, or made again", pa.limit)
	}
	pb := c.of(b)
	if pb.limit != 8 || pb == pa {
		t.Fatalf("plan of b: limit %d", pb.limit)
	}
	if c.of(a) != pa || c.of(b) != pb || c.of(b) != pb {
		t.Fatal("a plan was made again, or another filter's returned")
	}
	// A filter with the same text parsed again is another filter: its own plan, equal.
	a2 := parse(`{"room":{"timeline":{"limit":7}}}`)
	if p := c.of(a2); p == pa || p.limit != 7 || p.shareKey != pa.shareKey {
		t.Fatalf("plan of a parsed again: %p (a's %p), limit %d", p, pa, p.limit)
	}
}
