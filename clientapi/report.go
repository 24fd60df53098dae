package clientapi

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// routesReports mounts the endpoints that report content to the server's admins.
func (a *API) routesReports(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.With(a.rateLimited).Post("/rooms/{roomId}/report/{eventId}", h(a.reportEvent))
	r.With(a.rateLimited).Post("/rooms/{roomId}/report", h(a.reportRoom))
	r.With(a.rateLimited).Post("/users/{userId}/report", h(a.reportUser))
}

// reportReason decodes a report's body: {"reason": "..."}, the reason optional.
func reportReason(r *http.Request) (string, error) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return "", err
	}
	return body.Reason, nil
}

// reportEvent is POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}.
func (a *API) reportEvent(r *http.Request) (any, error) {
	reason, err := reportReason(r)
	if err != nil {
		return nil, err
	}
	return empty, a.rooms.ReportEvent(r.Context(), string(callerOf(r).UserID), pathParam(r, "roomId"), pathParam(r, "eventId"), reason)
}

// reportRoom is POST /_matrix/client/v3/rooms/{roomId}/report.
func (a *API) reportRoom(r *http.Request) (any, error) {
	reason, err := reportReason(r)
	if err != nil {
		return nil, err
	}
	return empty, a.rooms.ReportRoom(r.Context(), string(callerOf(r).UserID), pathParam(r, "roomId"), reason)
}

// reportUser is POST /_matrix/client/v3/users/{userId}/report.
func (a *API) reportUser(r *http.Request) (any, error) {
	reason, err := reportReason(r)
	if err != nil {
		return nil, err
	}
	return empty, a.rooms.ReportUser(r.Context(), string(callerOf(r).UserID), pathParam(r, "userId"), reason)
}

// eventReport is an event report as Synapse's admin API shows it.
type eventReport struct {
	ID         int64  `json:"id"`
	ReceivedTS int64  `json:"received_ts"`
	RoomID     string `json:"room_id"`
	EventID    string `json:"event_id"`
	UserID     string `json:"user_id"` // who reported it
	Sender     string `json:"sender"`  // who sent the event
	Reason     string `json:"reason"`
}

func toEventReport(x storage.Report) eventReport {
	return eventReport{ID: x.ID, ReceivedTS: x.ReceivedTS, RoomID: x.RoomID, EventID: x.EventID, UserID: x.Reporter,
		Sender: x.UserID, Reason: x.Reason}
}

// listEventReports is GET /_synapse/admin/v1/event_reports?from=&limit=: newest first.
func (a *API) listEventReports(r *http.Request) (any, error) {
	from, err := queryNonNegative(r, "from", 0)
	if err != nil {
		return nil, err
	}
	limit, err := queryNonNegative(r, "limit", 100)
	if err != nil {
		return nil, err
	}
	reports, total, err := a.rooms.EventReports(r.Context(), from, limit)
	if err != nil {
		return nil, err
	}
	out := struct {
		EventReports []eventReport `json:"event_reports"`
		Total        int64         `json:"total"`
		NextToken    *int          `json:"next_token,omitempty"`
	}{EventReports: make([]eventReport, 0, len(reports)), Total: total}
	for _, x := range reports {
		out.EventReports = append(out.EventReports, toEventReport(x))
	}
	if next := from + len(reports); int64(next) < total {
		out.NextToken = &next
	}
	return out, nil
}

// getEventReport is GET /_synapse/admin/v1/event_reports/{id}.
func (a *API) getEventReport(r *http.Request) (any, error) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		return nil, spec.ErrNotFound.With("Event report not found")
	}
	x, err := a.rooms.EventReport(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return toEventReport(x), nil
}

// deleteEventReport is DELETE /_synapse/admin/v1/event_reports/{id}.
func (a *API) deleteEventReport(r *http.Request) (any, error) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		return nil, spec.ErrNotFound.With("Event report not found")
	}
	return empty, a.rooms.DeleteEventReport(r.Context(), id)
}

// queryNonNegative reads an integer query parameter that may not be negative (def if absent).
func queryNonNegative(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, spec.ErrInvalidParam.Withf("Query parameter %s must be a non-negative integer", name)
	}
	return n, nil
}
