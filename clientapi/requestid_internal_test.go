package clientapi

import (
	"math/bits"
	"strconv"
	"testing"
)

// TestNewRequestID: request IDs are 16 hex digits, all different, and consecutive ones share no
// visible pattern (they do not count the server's requests for a client).
func TestNewRequestID(t *testing.T) {
	seen := map[string]bool{}
	var prev uint64
	near := 0
	for i := range 20000 {
		id := newRequestID()
		if len(id) != 16 {
			t.Fatalf("request ID %q is not 16 hex digits", id)
		}
		v, err := strconv.ParseUint(id, 16, 64)
		if err != nil {
			t.Fatalf("request ID %q: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("request ID %s repeated after %d", id, i)
		}
		seen[id] = true
		if i > 0 && bits.OnesCount64(v^prev) < 8 {
			near++
		}
		prev = v
	}
	if near > 20 {
		t.Fatalf("%d of 20,000 consecutive request IDs differ in fewer than 8 bits: they look like a counter", near)
	}
}
