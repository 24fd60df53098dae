// Package spec holds the vocabulary of the Matrix specification that every layer shares:
// error codes with their HTTP status, and typed identifiers.
package spec

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error is a Matrix error response: {"errcode": "M_...", "error": "..."} sent with Status.
// The package-level values are templates; derive a specific one with With or Withf.
type Error struct {
	Code    string
	Status  int
	Message string
	// Extra holds additional response fields some codes define (retry_after_ms, soft_logout, ...).
	Extra map[string]any
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// HTTPStatus is the status code the error is sent with.
func (e *Error) HTTPStatus() int { return e.Status }

// Is reports whether target is an *Error with the same code, so errors.Is(err, spec.ErrNotFound) works
// for any message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// With returns a copy of e with another message.
func (e *Error) With(msg string) *Error {
	c := *e
	c.Message = msg
	return &c
}

// Withf returns a copy of e with a formatted message.
func (e *Error) Withf(format string, args ...any) *Error { return e.With(fmt.Sprintf(format, args...)) }

// WithStatus returns a copy of e sent with another HTTP status (some endpoints define their own).
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// WithField returns a copy of e with an extra response field.
func (e *Error) WithField(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// MarshalJSON writes the error body: errcode, error and any extra fields.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, len(e.Extra)+2)
	for k, v := range e.Extra {
		body[k] = v
	}
	body["errcode"] = e.Code
	body["error"] = e.Message
	return json.Marshal(body)
}

// The error codes of the spec (client-server API, "Standard error response"), each with its usual
// status. Keep them in alphabetical order.
var (
	ErrBadJSON                = &Error{Code: "M_BAD_JSON", Status: http.StatusBadRequest, Message: "Malformed request"}
	ErrBadState               = &Error{Code: "M_BAD_STATE", Status: http.StatusBadRequest, Message: "Bad state"}
	ErrCannotOverwriteMedia   = &Error{Code: "M_CANNOT_OVERWRITE_MEDIA", Status: http.StatusConflict, Message: "Media already uploaded"}
	ErrDuplicateAnnotation    = &Error{Code: "M_DUPLICATE_ANNOTATION", Status: http.StatusBadRequest, Message: "You already sent this annotation"}
	ErrExclusive              = &Error{Code: "M_EXCLUSIVE", Status: http.StatusBadRequest, Message: "Reserved by an application service"}
	ErrForbidden              = &Error{Code: "M_FORBIDDEN", Status: http.StatusForbidden, Message: "Forbidden"}
	ErrGuestAccessForbidden   = &Error{Code: "M_GUEST_ACCESS_FORBIDDEN", Status: http.StatusForbidden, Message: "Guest access is not allowed"}
	ErrInvalidParam           = &Error{Code: "M_INVALID_PARAM", Status: http.StatusBadRequest, Message: "Invalid parameter"}
	ErrKeyTooLarge            = &Error{Code: "M_KEY_TOO_LARGE", Status: http.StatusBadRequest, Message: "Key too large"}
	ErrInvalidRoomState       = &Error{Code: "M_INVALID_ROOM_STATE", Status: http.StatusBadRequest, Message: "Invalid initial room state"}
	ErrInvalidUsername        = &Error{Code: "M_INVALID_USERNAME", Status: http.StatusBadRequest, Message: "Invalid username"}
	ErrLimitExceeded          = &Error{Code: "M_LIMIT_EXCEEDED", Status: http.StatusTooManyRequests, Message: "Too many requests"}
	ErrMissingParam           = &Error{Code: "M_MISSING_PARAM", Status: http.StatusBadRequest, Message: "Missing parameter"}
	ErrMissingToken           = &Error{Code: "M_MISSING_TOKEN", Status: http.StatusUnauthorized, Message: "Missing access token"}
	ErrNotFound               = &Error{Code: "M_NOT_FOUND", Status: http.StatusNotFound, Message: "Not found"}
	ErrNotJSON                = &Error{Code: "M_NOT_JSON", Status: http.StatusBadRequest, Message: "Content not JSON"}
	ErrNotYetUploaded         = &Error{Code: "M_NOT_YET_UPLOADED", Status: http.StatusGatewayTimeout, Message: "Content has not yet been uploaded"}
	ErrProfileTooLarge        = &Error{Code: "M_PROFILE_TOO_LARGE", Status: http.StatusBadRequest, Message: "Profile too large"}
	ErrResourceLimitExceeded  = &Error{Code: "M_RESOURCE_LIMIT_EXCEEDED", Status: http.StatusForbidden, Message: "Resource limit exceeded"}
	ErrRoomInUse              = &Error{Code: "M_ROOM_IN_USE", Status: http.StatusBadRequest, Message: "Room alias already taken"}
	ErrThreepidNotFound       = &Error{Code: "M_THREEPID_NOT_FOUND", Status: http.StatusBadRequest, Message: "Third-party identifier not found"}
	ErrTooLarge               = &Error{Code: "M_TOO_LARGE", Status: http.StatusRequestEntityTooLarge, Message: "Request too large"}
	ErrUnauthorized           = &Error{Code: "M_UNAUTHORIZED", Status: http.StatusUnauthorized, Message: "Unauthorized"}
	ErrUnknown                = &Error{Code: "M_UNKNOWN", Status: http.StatusInternalServerError, Message: "Internal server error"}
	ErrUnknownToken           = &Error{Code: "M_UNKNOWN_TOKEN", Status: http.StatusUnauthorized, Message: "Unknown access token"}
	ErrUnsupportedRoomVersion = &Error{Code: "M_UNSUPPORTED_ROOM_VERSION", Status: http.StatusBadRequest, Message: "Unsupported room version"}
	ErrUnrecognized           = &Error{Code: "M_UNRECOGNIZED", Status: http.StatusNotFound, Message: "Unrecognized request"}
	ErrUserDeactivated        = &Error{Code: "M_USER_DEACTIVATED", Status: http.StatusForbidden, Message: "This account has been deactivated"}
	ErrUserInUse              = &Error{Code: "M_USER_IN_USE", Status: http.StatusBadRequest, Message: "User ID already taken"}
	ErrWeakPassword           = &Error{Code: "M_WEAK_PASSWORD", Status: http.StatusBadRequest, Message: "Password too weak"}
)

// LimitExceeded is M_LIMIT_EXCEEDED telling the client how long to wait.
func LimitExceeded(retryAfterMS int64) *Error {
	return ErrLimitExceeded.WithField("retry_after_ms", retryAfterMS)
}

// UnknownToken is M_UNKNOWN_TOKEN; soft says whether the client may keep its session (soft logout).
func UnknownToken(msg string, soft bool) *Error {
	return ErrUnknownToken.With(msg).WithField("soft_logout", soft)
}
