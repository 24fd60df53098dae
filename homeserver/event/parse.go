package event

import (
	"crypto/sha256"
	"errors"
	"fmt"
)

// Parsing a PDU received over federation (or read back from storage): canonical JSON (rooms/v6
// "Canonical JSON": strictly enforced), the size limits of the client-server API ("Size
// limits"), and the event format of room versions 6-12 (data/api/server-server/definitions/
// pdu_v6, pdu_v11, pdu_v12).

// Size limits.
const (
	// MaxPDUSize is the largest an event may be as canonical JSON, signatures included.
	MaxPDUSize = 65536
	// maxIDSize bounds sender, room_id, state_key, type and event_id (user, room and event IDs
	// are limited to 255 bytes by the identifier grammar).
	maxIDSize = 255
	// PDU schema: "Must contain less than or equal to 20 events" / "10 events".
	maxPrevEvents = 20
	maxAuthEvents = 10
)

var (
	// ErrInvalid is matched by errors for JSON that is canonical but not a valid event of the
	// room version (missing or mistyped fields).
	ErrInvalid = errors.New("invalid event")
	// ErrTooLarge is matched by errors for events over MaxPDUSize or over a per-field limit.
	ErrTooLarge = errors.New("event too large")
)

// Parse validates an event of room version v and returns it with EventID, Version and Raw set.
// Raw is the canonical form of data, and the PDU's Content and Unsigned point into it.
//
// Parse checks the format only: it does not verify signatures (VerifyEventSignatures) or the
// content hash (CheckContentHash), nor any auth rule. Per the v12 format, an m.room.create event
// has no room_id; one that has it anyway is left for the auth rules to reject.
func Parse(v Version, data []byte) (*PDU, error) {
	if !v.Known() {
		return nil, fmt.Errorf("parse event: unknown room version")
	}
	canon, err := Canonical(data)
	if err != nil {
		return nil, err
	}
	return parseCanonical(v, canon, nil)
}

// required fields, as bits.
const (
	fSender = 1 << iota
	fType
	fContent
	fDepth
	fOriginServerTS
	fHashes
	fSignatures
	fPrevEvents
	fAuthEvents
	fRoomID
	fAll = fSender | fType | fContent | fDepth | fOriginServerTS | fHashes | fSignatures | fPrevEvents | fAuthEvents
)

var requiredNames = []string{"sender", "type", "content", "depth", "origin_server_ts", "hashes",
	"signatures", "prev_events", "auth_events"}

// parseCanonical parses canonical event JSON. signedMsg, when known (Build), is the redacted
// event without signatures, whose hash is the reference hash.
func parseCanonical(v Version, canon, signedMsg []byte) (*PDU, error) {
	if len(canon) > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes as canonical JSON, limit %d", ErrTooLarge, len(canon), MaxPDUSize)
	}
	p := &PDU{Version: v, Raw: canon, canonical: true}
	seen := 0
	it := members(canon)
	if it.err != nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	for it.next() {
		var err error
		switch key := string(it.key); key {
		case "room_id":
			seen |= fRoomID
			p.RoomID, err = idField(key, it.val, '!')
		case "sender":
			seen |= fSender
			if p.Sender, err = idField(key, it.val, '@'); err == nil {
				if _, e := serverOf(p.Sender); e != nil {
					err = fmt.Errorf("%w: sender: %w", ErrInvalid, e)
				}
			}
		case "type":
			seen |= fType
			p.Type, err = idField(key, it.val, 0)
		case "state_key":
			var sk string
			if sk, err = idField(key, it.val, 0); err == nil {
				p.StateKey = &sk
			}
		case "event_id":
			_, err = idField(key, it.val, 0) // not used in v4+ formats; only its size is limited
		case "content":
			seen |= fContent
			p.Content, err = objectField(key, it.val)
		case "unsigned":
			p.Unsigned, err = objectField(key, it.val)
		case "prev_events":
			seen |= fPrevEvents
			p.PrevEvents, err = eventIDList(key, it.val, maxPrevEvents)
		case "auth_events":
			seen |= fAuthEvents
			p.AuthEvents, err = eventIDList(key, it.val, maxAuthEvents)
		case "depth":
			seen |= fDepth
			if p.Depth, err = intField(key, it.val); err == nil && p.Depth < 0 {
				err = fmt.Errorf("%w: depth is negative", ErrInvalid)
			}
		case "origin_server_ts":
			seen |= fOriginServerTS
			p.OriginServerTS, err = intField(key, it.val)
		case "redacts":
			if !v.RedactsInContent() {
				p.Redacts, err = idField(key, it.val, '$')
			}
		case "hashes":
			seen |= fHashes
			p.Hashes, err = hashesField(it.val)
		case "signatures":
			seen |= fSignatures
			p.Signatures, err = signaturesField(it.val)
		}
		if err != nil {
			return nil, err
		}
	}
	if it.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, it.err)
	}
	if seen&fAll != fAll {
		for i, name := range requiredNames {
			if seen&(1<<i) == 0 {
				return nil, fmt.Errorf("%w: %s is missing", ErrInvalid, name)
			}
		}
	}
	createV12 := v.RoomIDFromCreateEvent() && p.Type == "m.room.create"
	if seen&fRoomID == 0 && !createV12 {
		return nil, fmt.Errorf("%w: room_id is missing", ErrInvalid)
	}
	if signedMsg == nil {
		h, err := referenceHash(v, canon)
		if err != nil {
			return nil, err
		}
		p.EventID = eventIDFromHash(h)
	} else {
		p.EventID = eventIDFromHash(sha256.Sum256(signedMsg))
	}
	return p, nil
}

// idField decodes a string field limited to 255 bytes, optionally starting with sigil.
func idField(name string, raw []byte, sigil byte) (string, error) {
	s, ok := unquote(raw)
	if !ok {
		return "", fmt.Errorf("%w: %s must be a string", ErrInvalid, name)
	}
	if err := checkID(name, s, sigil); err != nil {
		return "", err
	}
	return s, nil
}

// checkID checks the decoded string of an ID field (see idField).
func checkID(name, s string, sigil byte) error {
	if len(s) > maxIDSize {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, name, len(s), maxIDSize)
	}
	if sigil != 0 && (len(s) < 2 || s[0] != sigil) {
		return fmt.Errorf("%w: %s %q does not start with %q", ErrInvalid, name, s, sigil)
	}
	return nil
}

// checkIDList checks decoded event IDs as eventIDList does, in the same order.
func checkIDList(name string, ids []string, limit int) error {
	for i, id := range ids {
		if err := checkID(name, id, '$'); err != nil {
			return err
		}
		if i >= limit {
			return tooManyIDs(name, limit)
		}
	}
	return nil
}

func tooManyIDs(name string, limit int) error {
	return fmt.Errorf("%w: %s has more than %d entries", ErrInvalid, name, limit)
}

func objectField(name string, raw []byte) ([]byte, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("%w: %s must be an object", ErrInvalid, name)
	}
	return raw, nil
}

func intField(name string, raw []byte) (int64, error) {
	n, ok := intValue(raw)
	if !ok {
		return 0, fmt.Errorf("%w: %s must be an integer", ErrInvalid, name)
	}
	return n, nil
}

// eventIDList decodes an array of event IDs of at most limit entries.
func eventIDList(name string, raw []byte, limit int) ([]string, error) {
	if len(raw) < 2 || raw[0] != '[' {
		return nil, fmt.Errorf("%w: %s must be an array", ErrInvalid, name)
	}
	ids := []string{}
	for i := 1; i < len(raw)-1; {
		if raw[i] == ',' {
			i++
		}
		end, err := skipValue(raw, i)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
		}
		id, err := idField(name, raw[i:end], '$')
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
		if len(ids) > limit {
			return nil, tooManyIDs(name, limit)
		}
		i = end
	}
	return ids, nil
}

// hashesField decodes hashes: an object with a string sha256. Other entries are kept if they
// are strings and otherwise ignored (the schema does not define them).
func hashesField(raw []byte) (map[string]string, error) {
	out := map[string]string{}
	it := members(raw)
	if it.err != nil {
		return nil, fmt.Errorf("%w: hashes must be an object", ErrInvalid)
	}
	for it.next() {
		s, ok := unquote(it.val)
		if !ok {
			if string(it.key) == "sha256" {
				return nil, fmt.Errorf("%w: hashes.sha256 must be a string", ErrInvalid)
			}
			continue
		}
		out[decodeKey(it.key)] = s
	}
	if _, ok := out["sha256"]; !ok {
		return nil, fmt.Errorf("%w: hashes.sha256 is missing", ErrInvalid)
	}
	return out, it.err
}

// signaturesField decodes signatures: server name -> key ID -> signature, all strings.
func signaturesField(raw []byte) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	it := members(raw)
	if it.err != nil {
		return nil, fmt.Errorf("%w: signatures must be an object", ErrInvalid)
	}
	for it.next() {
		server := decodeKey(it.key)
		inner := members(it.val)
		if inner.err != nil {
			return nil, fmt.Errorf("%w: signatures.%s must be an object", ErrInvalid, server)
		}
		sigs := map[string]string{}
		for inner.next() {
			s, ok := unquote(inner.val)
			if !ok {
				return nil, fmt.Errorf("%w: signatures.%s values must be strings", ErrInvalid, server)
			}
			sigs[decodeKey(inner.key)] = s
		}
		out[server] = sigs
	}
	return out, it.err
}
