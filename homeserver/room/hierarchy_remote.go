package room

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Rooms of a space hierarchy this server does not know, filled in from other servers' answers to
// GET /v1/hierarchy (client-server API, "Spaces", server behaviour).

// Bounds of what one walk asks of other servers: requests, and the time spent waiting for them.
const (
	maxRemoteHierarchyFetches = 50
	remoteHierarchyBudget     = 30 * time.Second
)

// HierarchyFetcher asks other servers, via first, for a room's federated hierarchy. It returns an
// error when none answered with it.
type HierarchyFetcher func(ctx context.Context, roomID string, via []string, suggestedOnly bool) (SpaceHierarchy, error)

// remoteWalk holds what one walk learned from other servers. Local data always wins: it is only
// asked about rooms this server does not know.
type remoteWalk struct {
	fetch     HierarchyFetcher
	suggested bool
	known     map[string]*summary
	// complete: known[id] came with its m.space.child events (a room's own answer, or a child
	// whose answer carried children_state).
	complete     map[string]bool
	inaccessible map[string]bool
	fetches      int
	until        time.Time // no request starts after it; those under way end at it
}

func newRemoteWalk(fetch HierarchyFetcher, suggested bool) *remoteWalk {
	if fetch == nil {
		return nil
	}
	return &remoteWalk{fetch: fetch, suggested: suggested, known: map[string]*summary{}, complete: map[string]bool{}, inaccessible: map[string]bool{},
		until: time.Now().Add(remoteHierarchyBudget)}
}

// summary is what other servers say of a room this server does not know (nil: nothing, or a room
// they called inaccessible).
func (w *remoteWalk) summary(ctx context.Context, roomID string, via []string) *summary {
	if w == nil || w.inaccessible[roomID] {
		return nil
	}
	if sum := w.known[roomID]; sum != nil && (w.complete[roomID] || sum.RoomType != RoomTypeSpace) {
		return sum
	}
	if w.fetches >= maxRemoteHierarchyFetches || ctx.Err() != nil || time.Now().After(w.until) {
		return w.known[roomID]
	}
	w.fetches++
	fctx, cancel := context.WithDeadline(ctx, w.until)
	h, err := w.fetch(fctx, roomID, via, w.suggested)
	cancel()
	if err != nil || h.Room.RoomID != roomID {
		return w.known[roomID]
	}
	w.learn(h.Room, true)
	for _, ch := range h.Children {
		if !w.complete[ch.RoomID] {
			w.learn(ch, ch.ChildrenState != nil)
		}
	}
	for _, id := range h.InaccessibleChildren {
		if w.known[id] == nil {
			w.inaccessible[id] = true
		}
	}
	return w.known[roomID]
}

func (w *remoteWalk) learn(h HierarchyRoom, complete bool) {
	if !strings.HasPrefix(h.RoomID, "!") {
		return
	}
	w.known[h.RoomID] = remoteSummary(h)
	w.complete[h.RoomID] = complete
}

// remoteSummary turns a room of another server's answer into a summary: its m.space.child
// events (stripped, with origin_server_ts) become children as the local walk reads them.
func remoteSummary(h HierarchyRoom) *summary {
	sum := &summary{PublicRoom: h.PublicRoom, version: h.RoomVersion, encryption: h.Encryption, allowedRoomIDs: h.AllowedRoomIDs}
	if sum.JoinRule == "" {
		sum.JoinRule = JoinRulePublic // the spec's default for an absent join_rule
	}
	for _, raw := range h.ChildrenState {
		var st struct {
			Type           string                     `json:"type"`
			StateKey       *string                    `json:"state_key"`
			Sender         string                     `json:"sender"`
			OriginServerTS int64                      `json:"origin_server_ts"`
			Content        map[string]json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &st) != nil || st.Type != TypeSpaceChild || st.StateKey == nil || !strings.HasPrefix(*st.StateKey, "!") ||
			!validSpaceChild(st.Content) {
			continue
		}
		sum.children = append(sum.children, storage.Event{RoomID: h.RoomID, Type: st.Type, StateKey: st.StateKey, Sender: st.Sender,
			OriginServerTS: st.OriginServerTS, ClientJSON: mustJSON(map[string]any{"content": st.Content})})
	}
	return sum
}

// childVia is the via list of an m.space.child event.
func childVia(ev storage.Event) []string {
	var via []string
	_ = json.Unmarshal(contentOf(ev)["via"], &via)
	return via
}
