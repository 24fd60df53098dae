package typing

import "time"

// SetFedRefresh shortens the federation refresh for a test; the returned function restores it.
func SetFedRefresh(d time.Duration) (restore func()) {
	old := fedRefresh
	fedRefresh = d
	return func() { fedRefresh = old }
}
