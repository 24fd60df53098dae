package federation

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// The published room directory for other servers (server-server API, "Public Room Directory"):
// the same rooms, order, pagination tokens and filter as the client-server /publicRooms.

// getPublicRooms is GET /_matrix/federation/v1/publicRooms.
func (a *API) getPublicRooms(r *http.Request) (any, error) {
	q := r.URL.Query()
	req := room.PublicRoomsRequest{Since: q.Get("since"), ThirdPartyInstanceID: q.Get("third_party_instance_id")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, spec.ErrInvalidParam.With("limit must be a non-negative integer")
		}
		req.Limit = n
	}
	switch q.Get("include_all_networks") {
	case "", "false":
	case "true":
		req.IncludeAllNetworks = true
	default:
		return nil, spec.ErrInvalidParam.With("include_all_networks must be true or false")
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// postPublicRooms is POST /_matrix/federation/v1/publicRooms: the same with a filter.
func (a *API) postPublicRooms(r *http.Request) (any, error) {
	var body publicRoomsBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, spec.ErrBadJSON.With("Expected {limit, since, filter, include_all_networks, third_party_instance_id}")
	}
	if body.Limit != nil && *body.Limit < 0 {
		return nil, spec.ErrInvalidParam.With("limit must be a non-negative integer")
	}
	return a.rooms.PublicRooms(r.Context(), body.request())
}

// publicRoomsBody is the body of POST /publicRooms, in both APIs.
type publicRoomsBody struct {
	Limit  *int   `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term,omitempty"`
		RoomTypes         []*string `json:"room_types,omitempty"`
	} `json:"filter,omitempty"`
	IncludeAllNetworks   bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstanceID string `json:"third_party_instance_id,omitempty"`
}

func (b publicRoomsBody) request() room.PublicRoomsRequest {
	req := room.PublicRoomsRequest{Since: b.Since, IncludeAllNetworks: b.IncludeAllNetworks, ThirdPartyInstanceID: b.ThirdPartyInstanceID}
	if b.Limit != nil {
		req.Limit = *b.Limit
	}
	if b.Filter != nil {
		req.SearchTerm, req.RoomTypes = b.Filter.GenericSearchTerm, b.Filter.RoomTypes
	}
	return req
}
