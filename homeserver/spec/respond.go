package spec

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// JSONAppender is a response body that writes its own JSON (the sync response, whose stored
// events encoding/json would re-validate).
type JSONAppender interface{ AppendJSON(b []byte) []byte }

// JSONContentType is the Content-Type header of JSON responses, one slice for all: assign it to
// the header map (net/http only reads header values; never append to it).
var JSONContentType = []string{"application/json"}

// WriteJSON sends v as the JSON body of a response with the given status. A value that cannot be
// encoded becomes a 500 M_UNKNOWN, never a partial body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var body []byte
	var err error
	if a, ok := v.(JSONAppender); ok {
		body = a.AppendJSON(make([]byte, 0, 4096))
	} else {
		body, err = json.Marshal(v)
	}
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(ErrUnknown)
	}
	h := w.Header()
	h["Content-Type"] = JSONContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
