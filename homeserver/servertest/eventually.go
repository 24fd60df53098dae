package servertest

import (
	"testing"
	"time"
)

// Eventually polls fn until it returns nil, failing the test with fn's last error after total.
// For what another goroutine, node or server does on its own time (wake-ups, queues, caches).
func Eventually(t testing.TB, total time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
