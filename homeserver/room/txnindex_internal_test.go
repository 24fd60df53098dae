package room

import (
	"fmt"
	"testing"
)

// TestTxnIndexExpiry: entries older than the cutoff are forgotten in the order they came, an ID
// used again after it was forgotten is kept with its new event, and the queue is compacted.
func TestTxnIndexExpiry(t *testing.T) {
	var x txnIndex
	ref := func(i int) txnRef { return txnRefOf("@u:x", "D", fmt.Sprint(i), "send") }
	for i := range 3000 {
		x.add([]txnEntry{{ref: ref(i), eventID: fmt.Sprint("$", i), ts: int64(i)}}, 0)
	}
	x.add([]txnEntry{{ref: ref(5), eventID: "$again", ts: 3000}}, 2500) // 5 was forgotten: cutoff 2500
	for i, want := range map[int]string{0: "", 2499: "", 2500: "$2500", 2999: "$2999", 5: "$again"} {
		if got := x.lookup(ref(i)); got != want {
			t.Errorf("%d: %q, want %q", i, got, want)
		}
	}
	if len(x.ids) != 501 || len(x.order)-x.head != 501 || x.head != 0 {
		t.Errorf("%d IDs, %d queued from %d; want 501 queued from 0 (compacted)", len(x.ids), len(x.order)-x.head, x.head)
	}
}

// TestTxnIndexLimit: past its limit the index forgets its oldest IDs first, even recent ones.
func TestTxnIndexLimit(t *testing.T) {
	x := txnIndex{max: 100}
	ref := func(i int) txnRef { return txnRefOf("@u:x", "D", fmt.Sprint(i), "send") }
	for i := range 150 {
		x.add([]txnEntry{{ref: ref(i), eventID: fmt.Sprint("$", i), ts: 1000}}, 0)
	}
	if len(x.ids) != 100 || x.lookup(ref(49)) != "" || x.lookup(ref(50)) != "$50" || x.lookup(ref(149)) != "$149" {
		t.Errorf("%d IDs kept; 49: %q, 50: %q, 149: %q; want the last 100", len(x.ids), x.lookup(ref(49)), x.lookup(ref(50)), x.lookup(ref(149)))
	}
}
