package mediaapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// handler is an endpoint answering JSON: a value sent with 200, or an error.
type handler func(r *http.Request) (any, error)

// rawHandler is an endpoint that writes its own body (content, thumbnails); it returns an error
// only before writing anything.
type rawHandler func(w http.ResponseWriter, r *http.Request) error

func (a *API) serveJSON(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := h(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

func (a *API) serveRaw(h rawHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) { spec.WriteJSON(w, status, v) }

// writeError sends a Matrix error; other errors are internal: logged, and M_UNKNOWN for the
// client.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var se *spec.Error
	if errors.As(err, &se) {
		if ms, ok := se.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
		}
		writeJSON(w, se.HTTPStatus(), se)
		return
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeJSON(w, http.StatusRequestEntityTooLarge, spec.ErrTooLarge.Withf("Request body is larger than %d bytes", tooBig.Limit))
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	a.log.ErrorContext(r.Context(), "internal error", "err", err, "method", r.Method, "path", r.URL.Path)
	writeJSON(w, http.StatusInternalServerError, spec.ErrUnknown)
}
