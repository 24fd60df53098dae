package room

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"slices"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Transaction IDs make PUT /send/{type}/{txnId} and PUT /redact/{eventId}/{txnId} idempotent: a
// device that repeats a request with the same transaction ID gets the first request's event, and
// no second one is stored. The device and transaction ID of an event are part of its events row
// (txn_device, txn_id), committed with it. The writer looks them up in memory (txnIndex): the IDs
// of the events committed since it started, and at its first job those of the events stored in
// the txnWindow before (storage RecentTxnEvents), so a retry after a crash or restart finds its
// event. A repeat older than the window is a new request, as on other servers (Synapse forgets
// transaction IDs after a day too).
//
// There is no table keyed by transaction ID: its inserts landed on one B-tree page per sending
// device, the largest share of the pages a group commit wrote (docs/performance.md).

// txnWindow is how long a transaction ID is remembered.
const txnWindow = 24 * time.Hour

// maxTxnIDs bounds the index (about 100 bytes each); past it the oldest are forgotten early.
const maxTxnIDs = 1 << 20

// txnRef identifies a transaction ID: a hash of the sender's user ID and device, the request's
// scope (its path's parts: "send", room, event type; or "redact", room, target) and the client's
// transaction ID. 128 bits of SHA-256: no two differ by chance.
type txnRef [16]byte

func txnRefOf(userID, deviceID, txnID string, scope ...string) txnRef {
	var buf [256]byte
	b := appendPart(appendPart(buf[:0], userID), deviceID)
	for _, s := range scope {
		b = appendPart(b, s)
	}
	sum := sha256.Sum256(appendPart(b, txnID))
	return txnRef(sum[:16])
}

// appendPart appends s with its length before it, so that parts cannot run into each other.
func appendPart(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// txnEntry is a transaction ID and the event it produced.
type txnEntry struct {
	ref     txnRef
	eventID string
	ts      int64 // the event's origin_server_ts, ms
}

// txnIndex holds the transaction IDs committed in the window; owned by the writer goroutine.
type txnIndex struct {
	ids    map[txnRef]string
	order  []txnEntry // oldest first, from head
	head   int
	loaded bool
	max    int // maxTxnIDs when 0 (tests set less)
}

func (x *txnIndex) lookup(ref txnRef) string { return x.ids[ref] }

// add remembers committed entries and forgets those older than cutoff (ms).
func (x *txnIndex) add(es []txnEntry, cutoff int64) {
	if x.ids == nil {
		x.ids = make(map[txnRef]string)
	}
	for _, e := range es {
		x.ids[e.ref] = e.eventID
		x.order = append(x.order, e)
	}
	limit := x.max
	if limit == 0 {
		limit = maxTxnIDs
	}
	for x.head < len(x.order) && (x.order[x.head].ts < cutoff || len(x.order)-x.head > limit) {
		e := &x.order[x.head]
		if x.ids[e.ref] == e.eventID {
			delete(x.ids, e.ref)
		}
		*e = txnEntry{}
		x.head++
	}
	if x.head > len(x.order)/2 && x.head > 1024 {
		x.order = append(x.order[:0], x.order[x.head:]...)
		x.head = 0
	}
}

// batchTxns are the transaction IDs a batch stores, for the lookups of its later jobs and of the
// next batch while this one is being committed (pipeline.go).
type batchTxns struct {
	ids     map[txnRef]string // of the jobs that ended well
	kept    []txnEntry
	pending []txnEntry // of the job running
	// inflight are the IDs of the pipelined batch being committed.
	inflight map[txnRef]string
}

func (b *batchTxns) lookup(ref txnRef) string {
	if id := b.ids[ref]; id != "" {
		return id
	}
	return b.inflight[ref]
}

func (b *batchTxns) add(e txnEntry) { b.pending = append(b.pending, e) }

// keep makes the running job's IDs the batch's; drop forgets them (the job failed).
func (b *batchTxns) keep() {
	for _, e := range b.pending {
		if b.ids == nil {
			b.ids = make(map[txnRef]string)
		}
		b.ids[e.ref] = e.eventID
		b.kept = append(b.kept, e)
	}
	b.pending = b.pending[:0]
}

func (b *batchTxns) drop() { b.pending = b.pending[:0] }

// lookupTxn returns the event a transaction ID produced, or "" for a new one.
func (t *txn) lookupTxn(ref txnRef) string {
	if id := t.txns.lookup(ref); id != "" {
		return id
	}
	return t.s.txns.lookup(ref)
}

// txnCutoff is the origin_server_ts before which transaction IDs are forgotten.
func (s *Service) txnCutoff() int64 { return s.Now().Add(-txnWindow).UnixMilli() }

// committedTxns remembers the IDs of a batch that committed (on the writer goroutine).
func (s *Service) committedTxns(b *batchTxns) {
	if len(b.kept) > 0 {
		s.txns.add(b.kept, s.txnCutoff())
	}
}

// loadTxns fills the index from the events stored in the window, before the writer's first job.
func (s *Service) loadTxns() error {
	if s.txns.loaded {
		return nil
	}
	cutoff := s.txnCutoff()
	evs, err := s.store.Read().RecentTxnEvents(context.Background(), cutoff)
	if err != nil {
		return err
	}
	slices.SortFunc(evs, func(a, b storage.TxnEvent) int { return cmp.Compare(a.OriginServerTS, b.OriginServerTS) })
	es := make([]txnEntry, 0, len(evs))
	for _, e := range evs {
		for _, ref := range txnRefsOf(e) {
			es = append(es, txnEntry{ref: ref, eventID: e.EventID, ts: e.OriginServerTS})
		}
	}
	s.txns.add(es, cutoff)
	s.txns.loaded = true
	return nil
}

// txnRefsOf returns the scoped transaction IDs a stored event may have been sent with: a send's is
// scoped by its room and type; a redaction may also have come from /redact, scoped by its target.
func txnRefsOf(e storage.TxnEvent) []txnRef {
	refs := []txnRef{txnRefOf(e.Sender, e.DeviceID, e.TxnID, "send", e.RoomID, e.Type)}
	if e.Type == TypeRedaction {
		var r struct {
			Redacts string `json:"redacts"`
			Content struct {
				Redacts string `json:"redacts"`
			} `json:"content"`
		}
		if json.Unmarshal(e.PDU, &r) == nil {
			target := r.Content.Redacts
			if target == "" {
				target = r.Redacts
			}
			if target != "" {
				refs = append(refs, txnRefOf(e.Sender, e.DeviceID, e.TxnID, "redact", e.RoomID, target))
			}
		}
	}
	return refs
}
