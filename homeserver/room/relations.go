package room

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	gosync "sync"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Relation types with server-side aggregation.
const (
	RelThread    = "m.thread"
	RelReplace   = "m.replace"
	RelReference = "m.reference"
)

// ChildrenUpTo lists the events that relate to evs as threads, edits or references (the children
// that bundled relations aggregate), leaving out redacted parents: the read ClientEventsUpTo made
// converting the same events up to the same position, shared with it. A /sync room section shared
// by its readers asks this after the conversion, to learn whether the conversion found children.
func (s *Service) ChildrenUpTo(ctx context.Context, evs []storage.Event, upTo int64) ([]storage.Event, error) {
	return s.children(ctx, s.store.Read(), evs, upTo)
}

// freshEvents are the events of the pipelined batches committed since the serial path last
// started a transaction: plain messages of this node, to which no stored event relates. Every
// event is stored by the writer, and one that relates to another (an edit, a thread reply, a
// reference, from here or from another server) only by the serial path, which forgets them first;
// an event's ID is known only once it exists, so nothing related to them before. At fan-out this
// spares the read of the children of each new message (a round trip on PostgreSQL). It holds only
// while this node is the only one storing events (alone).
type freshEvents struct {
	mu  gosync.Mutex
	ids map[string]struct{}
}

// maxFreshEvents bounds the events kept; past it they are forgotten (their children are read).
const maxFreshEvents = 4096

func (f *freshEvents) add(evs []storage.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil || len(f.ids)+len(evs) > maxFreshEvents {
		f.ids = make(map[string]struct{}, min(len(evs), maxFreshEvents))
	}
	for _, e := range evs {
		f.ids[e.EventID] = struct{}{}
	}
}

func (f *freshEvents) forget() {
	f.mu.Lock()
	f.ids = nil
	f.mu.Unlock()
}

// all reports whether every one of ids is fresh (so none has children).
func (f *freshEvents) all(ids []string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if _, ok := f.ids[id]; !ok {
			return false
		}
	}
	return len(ids) > 0
}

// alone reports whether this node is the only one writing to its database: it has no bus, or the
// embedded one, whose NATS server opens no port for other nodes.
func (s *Service) alone() bool { return s.bus == nil || s.bus.Embedded() }

// ChildReads counts the reads of events' children (for bundled relations) this service made.
func (s *Service) ChildReads() int64 { return s.childReads.Load() }

// children reads the children of the events that are not redacted; with upTo > 0 the read is
// shared by the callers that ask about the same events up to the same position.
func (s *Service) children(ctx context.Context, c storage.Conn, evs []storage.Event, upTo int64) ([]storage.Event, error) {
	ids := make([]string, 0, len(evs))
	for _, e := range evs {
		if e.RedactedBy == "" {
			ids = append(ids, e.EventID)
		}
	}
	if s.alone() && s.fresh.all(ids) {
		return nil, nil
	}
	read := func(ctx context.Context) ([]storage.Event, error) {
		s.childReads.Add(1)
		return c.RelatedEvents(ctx, ids, RelThread, RelReplace, RelReference)
	}
	if upTo > 0 && len(ids) > 0 {
		return s.related.Get(ctx, relatedKey{strings.Join(ids, "\x00"), upTo}, read)
	}
	return read(ctx)
}

// bundledRelations computes the m.relations bundle (spec "Aggregations of child events") of each
// event that has children: the thread summary, the latest edit and references. Children the
// reader may not see are left out. One query for the whole page.
// With upTo > 0 the read is shared (ClientEventsUpTo).
func (s *Service) bundledRelations(ctx context.Context, c storage.Conn, r Reader, evs []storage.Event, upTo int64) (map[string]json.RawMessage, error) {
	children, err := s.children(ctx, c, evs, upTo)
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

// RelationsPage is a page of /relations or /threads.
type RelationsPage struct {
	Chunk     []json.RawMessage
	NextBatch string
	PrevBatch string
}

// Relations is GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]:
// the visible events relating to a visible parent, by stream position ("from" tokens are
// positions, as sync gives).
func (s *Service) Relations(ctx context.Context, r Reader, roomID, eventID, relType, eventType, from string, backward bool, limit int) (RelationsPage, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return RelationsPage{}, err
	}
	parent, err := c.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (parent.RoomID != roomID || !v.canSee(&parent)) {
		return RelationsPage{}, spec.ErrNotFound.With("Event not found")
	}
	if err != nil {
		return RelationsPage{}, err
	}
	pos := int64(math.MaxInt64)
	if !backward {
		pos = 0
	}
	if from != "" {
		if pos, err = parseStreamToken(from); err != nil {
			return RelationsPage{}, err
		}
	}
	page := RelationsPage{}
	var picked []storage.Event
	exhausted := false
	for scanned := 0; len(picked) < limit && scanned < maxScan && !exhausted; {
		want := limit + 1
		batch, err := c.Relations(ctx, roomID, eventID, relType, eventType, pos, backward, want)
		if err != nil {
			return RelationsPage{}, err
		}
		consumed := 0
		for i := range batch {
			consumed++
			scanned++
			pos = batch[i].StreamPos
			if v.canSee(&batch[i]) {
				picked = append(picked, batch[i])
				if len(picked) == limit {
					break
				}
			}
		}
		exhausted = len(batch) < want && consumed == len(batch)
	}
	if !exhausted {
		page.NextBatch = streamToken(pos)
	}
	if from != "" {
		page.PrevBatch = from
	}
	page.Chunk, err = s.clientEvents(ctx, c, r, picked)
	return page, err
}

// Threads is GET /_matrix/client/v1/rooms/{roomId}/threads: thread roots by latest activity with
// their bundled thread summaries. participated limits it to threads the reader started or replied
// to.
func (s *Service) Threads(ctx context.Context, r Reader, roomID string, participated bool, from string, limit int) (RelationsPage, error) {
	c := s.store.Read()
	v, err := s.readable(ctx, c, roomID, r.UserID)
	if err != nil {
		return RelationsPage{}, err
	}
	var before int64
	if from != "" {
		if before, err = parseStreamToken(from); err != nil {
			return RelationsPage{}, err
		}
	}
	participant := ""
	if participated {
		participant = r.UserID
	}
	var picked []storage.Event
	page := RelationsPage{}
	exhausted := false
	for scanned := 0; len(picked) < limit && scanned < maxScan && !exhausted; {
		want := limit + 1
		roots, err := c.ThreadRoots(ctx, roomID, participant, before, want)
		if err != nil {
			return RelationsPage{}, err
		}
		ids := make([]string, len(roots))
		for i, t := range roots {
			ids[i] = t.EventID
		}
		evs, err := c.Events(ctx, ids)
		if err != nil {
			return RelationsPage{}, err
		}
		byID := make(map[string]storage.Event, len(evs))
		for _, e := range evs {
			byID[e.EventID] = e
		}
		consumed := 0
		for _, t := range roots {
			consumed++
			scanned++
			before = t.LatestPos
			if e, ok := byID[t.EventID]; ok && v.canSee(&e) {
				picked = append(picked, e)
				if len(picked) == limit {
					break
				}
			}
		}
		exhausted = len(roots) < want && consumed == len(roots)
	}
	if !exhausted {
		page.NextBatch = streamToken(before)
	}
	page.Chunk, err = s.clientEvents(ctx, c, r, picked)
	return page, err
}

func streamToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) }

func parseStreamToken(tok string) (int64, error) {
	if strings.HasPrefix(tok, "s") {
		if n, err := strconv.ParseInt(tok[1:], 10, 64); err == nil && n >= 0 {
			return n, nil
		}
	}
	return 0, spec.ErrInvalidParam.Withf("Invalid pagination token %q", tok)
}

// checkRelation applies the server-side rules for relations a client sends: no duplicate
// annotation by the same user (M_DUPLICATE_ANNOTATION), and no thread rooted at an event that is
// itself a relation (400 M_UNKNOWN, as the spec asks until a code exists).
func (t *txn) checkRelation(rs *roomState, proto event.Proto) error {
	rel := relationOf(proto.Content)
	if rel.EventID == "" {
		return nil
	}
	switch rel.RelType {
	case "m.annotation":
		dup, err := t.c.HasAnnotation(t.ctx, rs.roomID, rel.EventID, proto.Sender, proto.Type, rel.Key)
		if err != nil {
			return err
		}
		if dup {
			return spec.ErrDuplicateAnnotation
		}
	case RelThread:
		parent, err := t.c.Event(t.ctx, rel.EventID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if parent.RelatesTo != "" {
			return spec.ErrUnknown.WithStatus(http.StatusBadRequest).With("Cannot start a thread from an event that has a relation")
		}
	}
	return nil
}
