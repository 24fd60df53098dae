package clientapi

import (
	"testing"
	"time"
)

// Knobs of the sync transports for the external tests. Set them before the server starts (the
// goroutines that read them are started after) and they are restored when the test ends.

func setKnob[T any](t testing.TB, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

func SetSSEKeepAlive(t testing.TB, d time.Duration)    { setKnob(t, &sseKeepAlive, d) }
func SetSSEWriteTimeout(t testing.TB, d time.Duration) { setKnob(t, &sseWriteTimeout, d) }
func SetWSQueueSize(t testing.TB, n int)               { setKnob(t, &wsQueueSize, n) }
func SetWSAuthTimeout(t testing.TB, d time.Duration)   { setKnob(t, &wsAuthTimeout, d) }
func SetWSWriteTimeout(t testing.TB, d time.Duration)  { setKnob(t, &wsWriteTimeout, d) }
func SetWSTooSlowHook(t testing.TB, f func())          { setKnob(t, &testHookWSTooSlow, f) }

// WSCloseTooSlow and WSCloseUnauthorized are the close codes the tests expect.
const (
	WSCloseTooSlow      = int(wsCloseTooSlow)
	WSCloseUnauthorized = int(wsCloseUnauthorized)
)
