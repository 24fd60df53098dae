package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// EDUs (ephemeral data units) travel in the same transactions as PDUs, after them. Two kinds go
// out:
//
//   - durable ones (to-device messages, device list and signing key updates, receipts): QueueEDU
//     writes a federation_edu_outbox row per destination and commits it before returning, so they
//     survive a restart and wait out a destination's downtime like events do;
//   - ephemeral ones (typing, presence): QueueEphemeralEDU keeps them in the destination's queue in
//     memory, coalesced by key (the latest typing state of a user in a room replaces the one not
//     sent yet) and dropped when not sent within ephemeralTTL: a typing notice that arrives minutes
//     late is wrong rather than late.
//
// Incoming EDUs are dispatched by edu_type to the handlers of registerEDUHandlers: to-device and
// device-list EDUs before the transaction's PDUs (keyEDUs), the others after them; types without
// a handler are ignored, as the spec asks.

// ephemeralTTL is how long an ephemeral EDU may wait for its destination.
const ephemeralTTL = time.Minute

// maxEphemeralPerDest bounds the ephemeral EDUs waiting for one destination (the oldest go first).
const maxEphemeralPerDest = 1000

// eduJSON is an EDU as transactions carry it.
type eduJSON struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// pendingEDU is an ephemeral EDU waiting in memory.
type pendingEDU struct {
	typ, key string
	content  json.RawMessage
	queued   time.Time
}

// EDUHandler processes one received EDU from origin (the authenticated server that sent the
// transaction). A returned error is logged; EDUs have no per-EDU result in the /send response.
type EDUHandler func(ctx context.Context, origin string, content json.RawMessage) error

// registerEDUHandlers fills a.edus: one line per EDU type this server acts on.
func (a *API) registerEDUHandlers() {
	a.edus = map[string]EDUHandler{}
	a.edus["m.direct_to_device"] = a.receiveDirectToDevice
	a.edus["m.device_list_update"] = a.receiveDeviceListUpdate
	a.edus["m.signing_key_update"] = a.receiveDeviceListUpdate
	a.edus["m.typing"] = a.receiveTyping
	a.edus["m.receipt"] = a.receiveReceipt
	a.edus["m.presence"] = a.receivePresence
}

// keyEDUs are the EDUs handled before the transaction's PDUs: a client sends a room's key to the
// other devices (to-device) before the first message encrypted with it, and both may travel in
// one transaction; handled in that order, the message never shows as undecryptable for want of a
// key that was in the same transaction.
var keyEDUs = map[string]bool{"m.direct_to_device": true, "m.device_list_update": true, "m.signing_key_update": true}

// receiveEDUs dispatches those of a transaction's EDUs that are key EDUs (keys true) or that are
// not (keys false), in order.
func (a *API) receiveEDUs(ctx context.Context, origin string, raws []json.RawMessage, keys bool) {
	for _, raw := range raws {
		var e eduJSON
		if err := json.Unmarshal(raw, &e); err != nil || e.Type == "" {
			if !keys {
				a.log.Debug("federation: dropped a malformed EDU", "origin", origin)
			}
			continue
		}
		h := a.edus[e.Type]
		if h == nil || keyEDUs[e.Type] != keys {
			continue
		}
		if err := h(ctx, origin, e.Content); err != nil {
			a.log.Info("federation: EDU not applied", "origin", origin, "edu_type", e.Type, "err", err)
		}
	}
}

// QueueEDU queues an EDU durably for the destinations (this server's own name among them is
// skipped) and wakes their queues. It returns once the rows are committed.
func (s *Sender) QueueEDU(ctx context.Context, destinations []string, eduType string, content any) error {
	raw, err := marshalContent(content)
	if err != nil {
		return err
	}
	dests := s.others(destinations)
	if len(dests) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	err = s.o.Store.Write(ctx, func(c storage.Conn) error {
		id, err := c.NextPosition(ctx, storage.StreamFederationEDU)
		if err != nil {
			return err
		}
		rows := make([]storage.OutboxEDU, len(dests))
		for i, d := range dests {
			rows[i] = storage.OutboxEDU{Destination: d, ID: id, Type: eduType, Content: raw, QueuedTS: now}
		}
		return c.InsertOutboxEDUs(ctx, rows)
	})
	if err != nil {
		return fmt.Errorf("federation: queue %s: %w", eduType, err)
	}
	s.wake(dests)
	return nil
}

// QueueEphemeralEDU queues an EDU in memory only (lost at restart, dropped if not sent within
// ephemeralTTL). key coalesces: an unsent EDU of the same type and key for a destination is
// replaced by this one ("" never coalesces).
func (s *Sender) QueueEphemeralEDU(destinations []string, eduType, key string, content any) {
	raw, err := marshalContent(content)
	if err != nil {
		s.o.Log.Error("federation: ephemeral EDU does not encode", "edu_type", eduType, "err", err)
		return
	}
	dests := s.others(destinations)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	now := time.Now()
	for _, d := range dests {
		q := s.queueLocked(d)
		if key != "" {
			q.eph = slices.DeleteFunc(q.eph, func(p pendingEDU) bool { return p.typ == eduType && p.key == key })
		}
		if len(q.eph) >= maxEphemeralPerDest {
			q.eph = q.eph[1:]
		}
		q.eph = append(q.eph, pendingEDU{typ: eduType, key: key, content: raw, queued: now})
		q.poke()
	}
}

// takeEphemeral removes up to n unexpired ephemeral EDUs from a destination's queue.
func (s *Sender) takeEphemeral(q *destQueue, n int) []pendingEDU {
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := time.Now().Add(-ephemeralTTL)
	q.eph = slices.DeleteFunc(q.eph, func(p pendingEDU) bool { return p.queued.Before(cutoff) })
	n = min(n, len(q.eph))
	out := slices.Clone(q.eph[:n])
	q.eph = slices.Delete(q.eph, 0, n)
	return out
}

// putBackEphemeral returns the ephemeral EDUs of a failed transaction to the front of the queue,
// except those a newer EDU with the same key replaced meanwhile.
func (s *Sender) putBackEphemeral(q *destQueue, eph []pendingEDU) {
	if len(eph) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	eph = slices.DeleteFunc(eph, func(p pendingEDU) bool {
		return p.key != "" && slices.ContainsFunc(q.eph, func(n pendingEDU) bool { return n.typ == p.typ && n.key == p.key })
	})
	q.eph = append(eph, q.eph...)
	if over := len(q.eph) - maxEphemeralPerDest; over > 0 {
		q.eph = q.eph[over:]
	}
}

// others removes this server and repeats from destinations.
func (s *Sender) others(destinations []string) []string {
	out := make([]string, 0, len(destinations))
	for _, d := range destinations {
		if d != "" && d != s.o.ServerName && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// wake tells every node's queues for dests that rows were queued (this node's directly when there
// is no bus).
func (s *Sender) wake(dests []string) {
	if s.o.Bus != nil {
		data, _ := json.Marshal(dests)
		err := s.o.Bus.Publish(bus.SubjectFederationOutbox, data)
		if err == nil {
			return
		}
		s.o.Log.Warn("federation: publish outbox wake-up", "err", err)
	}
	s.Kick(dests...)
}

func marshalContent(content any) (json.RawMessage, error) {
	switch c := content.(type) {
	case json.RawMessage:
		return c, nil
	case []byte:
		return c, nil
	}
	return json.Marshal(content)
}
