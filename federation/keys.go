package federation

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/federation/resolve"
	"github.com/hearthmx/homeserver/federation/serverkey"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// serverKeys is GET /_matrix/key/v2/server: our signing keys, signed by the current one.
func (a *API) serverKeys(w http.ResponseWriter, r *http.Request) {
	body, err := a.own.Response()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeRaw(w, http.StatusOK, body)
}

// queryKeysOne is GET /_matrix/key/v2/query/{serverName}: a server's keys, signed by us as notary.
func (a *API) queryKeysOne(w http.ResponseWriter, r *http.Request) {
	server, err := url.PathUnescape(chi.URLParam(r, "serverName"))
	if err != nil {
		server = ""
	}
	if _, err := resolve.ParseServerName(server); err != nil {
		write(w, http.StatusBadRequest, spec.ErrInvalidParam.Withf("Invalid server name: %v", err))
		return
	}
	var minValid int64
	if s := r.URL.Query().Get("minimum_valid_until_ts"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			write(w, http.StatusBadRequest, spec.ErrInvalidParam.With("minimum_valid_until_ts must be a timestamp"))
			return
		}
		minValid = n
	}
	a.answerKeyQuery(w, r, []serverkey.Query{{ServerName: server, MinValidUntilTS: minValid}})
}

// queryKeys is POST /_matrix/key/v2/query: keys of several servers, signed by us as notary.
func (a *API) queryKeys(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ServerKeys map[string]map[string]struct {
			MinValidUntilTS int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxBody)).Decode(&body); err != nil {
		write(w, http.StatusBadRequest, spec.ErrBadJSON.Withf("Invalid key query: %v", err))
		return
	}
	if body.ServerKeys == nil {
		write(w, http.StatusBadRequest, spec.ErrBadJSON.With("server_keys is required"))
		return
	}
	if len(body.ServerKeys) > serverkey.MaxNotaryServers {
		write(w, http.StatusBadRequest, spec.ErrInvalidParam.Withf("At most %d servers per query", serverkey.MaxNotaryServers))
		return
	}
	queries := make([]serverkey.Query, 0, len(body.ServerKeys))
	for server, keys := range body.ServerKeys {
		if _, err := resolve.ParseServerName(server); err != nil {
			continue // nothing to say about a name that cannot exist
		}
		q := serverkey.Query{ServerName: server}
		for id, c := range keys {
			q.KeyIDs = append(q.KeyIDs, id)
			q.MinValidUntilTS = max(q.MinValidUntilTS, c.MinValidUntilTS)
		}
		queries = append(queries, q)
	}
	a.answerKeyQuery(w, r, queries)
}

func (a *API) answerKeyQuery(w http.ResponseWriter, r *http.Request, queries []serverkey.Query) {
	keys, err := a.keys.NotaryAnswer(r.Context(), queries)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	write(w, http.StatusOK, map[string]any{"server_keys": keys})
}
