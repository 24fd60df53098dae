package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// handler is the shape of every endpoint: decode, validate, call the domain, return a value to send
// as JSON (200) or an error. One adapter, serve, turns both into HTTP.
type handler func(r *http.Request) (any, error)

// statusBody sends body with a status other than 200.
type statusBody struct {
	status int
	body   any
}

// statusError is an error that writes its own JSON body with its own status (spec.Error, UIA
// challenges).
type statusError interface {
	error
	HTTPStatus() int
}

// empty is the {} response.
var empty = struct{}{}

// serve adapts a handler to net/http.
func serve(log *slog.Logger, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := h(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		status := http.StatusOK
		if sb, ok := resp.(statusBody); ok {
			status, resp = sb.status, sb.body
		}
		writeJSON(w, status, resp)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) { spec.WriteJSON(w, status, v) }

// writeError sends a Matrix error. Errors that are not Matrix errors are internal: they are logged
// with the request ID and the client gets M_UNKNOWN without the cause.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var se statusError
	if errors.As(err, &se) {
		if se.HTTPStatus() == http.StatusTooManyRequests {
			var e *spec.Error
			if errors.As(err, &e) {
				if ms, ok := e.Extra["retry_after_ms"].(int64); ok {
					w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
				}
			}
		}
		writeJSON(w, se.HTTPStatus(), se)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; nobody reads an answer
	}
	log.ErrorContext(r.Context(), "internal error", "err", err, "method", r.Method, "path", r.URL.Path)
	writeJSON(w, http.StatusInternalServerError, spec.ErrUnknown)
}

// decodeJSON reads the request body as a JSON object into v. Errors are the spec's: M_NOT_JSON for
// a body that is not JSON, M_BAD_JSON for JSON of the wrong shape or types, M_TOO_LARGE over the
// body limit.
func decodeJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return unmarshalObject(body, v)
}

// decodeOptionalJSON is decodeJSON where an empty body means {}.
func decodeOptionalJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return unmarshalObject(body, v)
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, spec.ErrTooLarge.Withf("Request body is larger than %d bytes", tooBig.Limit)
		}
		return nil, spec.ErrNotJSON.With("Could not read the request body")
	}
	return body, nil
}

// unmarshalObject is the request decoder (fuzzed by FuzzDecode).
func unmarshalObject(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || !json.Valid(trimmed) {
		return spec.ErrNotJSON.With("Content not JSON")
	}
	if trimmed[0] != '{' {
		return spec.ErrBadJSON.With("The request body must be a JSON object")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				field = "(body)"
			}
			return spec.ErrBadJSON.Withf("%s must be of type %s", field, jsonTypeName(te.Type.Kind().String()))
		}
		return spec.ErrBadJSON.With(err.Error())
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "number"
	case "slice", "array":
		return "array"
	case "map", "struct", "ptr":
		return "object"
	}
	return kind
}

// missing is M_MISSING_PARAM for a required field.
func missing(field string) error {
	return spec.ErrMissingParam.With(fmt.Sprintf("%s is required", field))
}

// pathParam is a path parameter, percent-decoded: chi matches on the escaped path when the client
// escaped a character (user IDs are sent as %40alice%3Aexample.org), so parameters arrive escaped.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}
