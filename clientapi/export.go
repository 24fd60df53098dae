package clientapi

import (
	"net/http"

	"github.com/hearthmx/homeserver/homeserver/account"
)

// The client API's middleware, for the other handler packages the composition root mounts on the
// same router (mediaapi), so that their endpoints authenticate and rate-limit exactly as these do.

// RequireAuth resolves the access token into the caller (Caller), or answers M_MISSING_TOKEN /
// M_UNKNOWN_TOKEN.
func (a *API) RequireAuth(next http.Handler) http.Handler { return a.requireAuth(next) }

// RequireAdmin is RequireAuth for server admins only (M_FORBIDDEN for other users).
func (a *API) RequireAdmin(next http.Handler) http.Handler { return a.requireAdmin(next) }

// RateLimited applies the rate limits of the endpoints the spec marks "Rate-limited": per user
// behind RequireAuth, per client IP otherwise.
func (a *API) RateLimited(next http.Handler) http.Handler { return a.rateLimited(next) }

// Caller is the caller RequireAuth or RequireAdmin resolved (zero before them).
func Caller(r *http.Request) account.Caller { return callerOf(r) }
