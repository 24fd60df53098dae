package room

import (
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Relation types with server-side aggregation.
const (
	RelThread    = "m.thread"
	RelReplace   = "m.replace"
	RelReference = "m.reference"
)

// bundledRelations computes the m.relations bundle (spec "Aggregations of child events") of each
// event that has children: the thread summary, the latest edit and references. Children the
// reader may not see are left out. One query for the whole page.
func (s *Service) bundledRelations(ctx context.Context, c storage.Conn, r Reader, evs []storage.Event) (map[string]json.RawMessage, error) {
	ids := make([]string, 0, len(evs))
	for _, e := range evs {
		if e.RedactedBy == "" {
			ids = append(ids, e.EventID)
		}
	}
	children, err := c.RelatedEvents(ctx, ids, RelThread, RelReplace, RelReference)
	if err != nil || len(children) == 0 {
		return nil, err
	}
	parents := make(map[string]storage.Event, len(evs))
	for _, e := range evs {
		parents[e.EventID] = e
	}
	type thread struct {
		count        int
		latest       storage.Event
		participated bool
	}
	threads := map[string]*thread{}
	edits := map[string]storage.Event{}
	refs := map[string][]string{}
	viewers := map[string]*viewer{}
	for _, ch := range children {
		if ch.RedactedBy != "" {
			continue
		}
		v := viewers[ch.RoomID]
		if v == nil {
			if v, err = loadViewer(ctx, c, ch.RoomID, r.UserID); err != nil {
				return nil, err
			}
			viewers[ch.RoomID] = v
		}
		if !v.canSee(&ch) {
			continue
		}
		switch ch.RelType {
		case RelThread:
			t := threads[ch.RelatesTo]
			if t == nil {
				t = &thread{}
				threads[ch.RelatesTo] = t
			}
			t.count++
			t.latest = ch
			t.participated = t.participated || ch.Sender == r.UserID
		case RelReplace:
			// Only the original sender's edits count; the latest by (origin_server_ts, event_id).
			if p, ok := parents[ch.RelatesTo]; ok && p.Sender == ch.Sender {
				if cur, ok := edits[ch.RelatesTo]; !ok || ch.OriginServerTS > cur.OriginServerTS ||
					ch.OriginServerTS == cur.OriginServerTS && ch.EventID > cur.EventID {
					edits[ch.RelatesTo] = ch
				}
			}
		case RelReference:
			refs[ch.RelatesTo] = append(refs[ch.RelatesTo], ch.EventID)
		}
	}
	out := map[string]json.RawMessage{}
	for _, e := range evs {
		bundle := map[string]any{}
		if t, ok := threads[e.EventID]; ok {
			latest, err := s.clientEvents(ctx, c, r, []storage.Event{t.latest})
			if err != nil {
				return nil, err
			}
			bundle[RelThread] = map[string]any{"latest_event": latest[0], "count": t.count, "current_user_participated": t.participated || e.Sender == r.UserID}
		}
		if ed, ok := edits[e.EventID]; ok {
			edit, err := s.clientEvents(ctx, c, r, []storage.Event{ed})
			if err != nil {
				return nil, err
			}
			bundle[RelReplace] = edit[0]
		}
		if rs, ok := refs[e.EventID]; ok {
			chunk := make([]map[string]string, len(rs))
			for i, id := range rs {
				chunk[i] = map[string]string{"event_id": id}
			}
			bundle[RelReference] = map[string]any{"chunk": chunk}
		}
		if len(bundle) > 0 {
			out[e.EventID] = mustJSON(bundle)
		}
	}
	return out, nil
}
