package event

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Proto is an event this server is about to create, before hashing and signing.
type Proto struct {
	// RoomID must be empty for the m.room.create event of a room version with
	// RoomIDFromCreateEvent (v12+), whose room ID is derived from the event ID, and set otherwise.
	RoomID   string
	Sender   string
	Type     string
	StateKey *string
	// Content is any JSON object; it is canonicalised (nil means {}).
	Content    json.RawMessage
	PrevEvents []string
	AuthEvents []string
	Depth      int64
	// OriginServerTS is in milliseconds since the epoch.
	OriginServerTS int64
	// Redacts is the event an m.room.redaction redacts. It goes into content from room version 11
	// (RedactsInContent) and at the top level before.
	Redacts string
}

// Build creates a signed event: it lays out the federation JSON (canonical), adds the content
// hash and this server's signature, and returns the parsed PDU with its event ID.
func Build(v Version, proto Proto, serverName, keyID string, key ed25519.PrivateKey) (*PDU, error) {
	b, err := proto.layout(v, nil)
	if err != nil {
		return nil, err
	}
	signed, msg, err := signEvent(v, b, serverName, keyID, key)
	if err != nil {
		return nil, err
	}
	return parseCanonical(v, signed, msg)
}

// BuildUnsigned creates an event like Build but leaves signatures empty: its event ID, hashes and
// everything else are final, and SignPDU adds the signature when the event first leaves the
// server. Signing is most of the cost of creating an event, and a local room's timeline events
// may never need it. The size limit is checked as if signed by serverName with keyID.
//
// It is on the send path of every local event, so it writes the event once, hashes it where it
// lies and fills the PDU from proto instead of parsing back what it wrote. The result is what
// the general path gives (lay out, add hashes with hashEvent, parse with parseCanonical; kept as
// the reference in build_unsigned_test.go): the same bytes, fields and errors.
func BuildUnsigned(v Version, proto Proto, serverName, keyID string) (*PDU, error) {
	var m marks
	b, err := proto.layout(v, &m)
	if err != nil {
		return nil, err
	}
	ref := m.hash(v, proto.Type, b)
	// The checks parseCanonical would make of the event, in its order.
	if len(b) > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes as canonical JSON, limit %d", ErrTooLarge, len(b), MaxPDUSize)
	}
	if err := proto.checkLimits(v); err != nil {
		return nil, err
	}
	if n := len(b) - len(`{}`) + signaturesSize(serverName, keyID); n > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes as signed canonical JSON, limit %d", ErrTooLarge, n, MaxPDUSize)
	}
	return proto.pdu(v, b, m, ref), nil
}

// pdu is the event proto laid out as b, as parseCanonical would return it: Content points into
// b, and nothing aliases proto's slices or state key.
func (proto Proto) pdu(v Version, b []byte, m marks, ref [sha256.Size]byte) *PDU {
	// One array for both lists; PrevEvents' capacity ends where AuthEvents begins.
	ids := make([]string, len(proto.PrevEvents)+len(proto.AuthEvents))
	n := copy(ids, proto.PrevEvents)
	copy(ids[n:], proto.AuthEvents)
	// The event ID ("$" and the reference hash in URL-safe base64, as eventIDFromHash makes it)
	// and the content hash share one allocation.
	var buf [1 + 2*contentHashLen]byte
	buf[0] = '$'
	base64.RawURLEncoding.Encode(buf[1:1+contentHashLen], ref[:])
	copy(buf[1+contentHashLen:], b[m.contentHash:m.contentHash+contentHashLen])
	s := string(buf[:])
	eventID, contentHash := s[:1+contentHashLen], s[1+contentHashLen:]
	p := &PDU{
		EventID:        eventID,
		RoomID:         proto.RoomID,
		Sender:         proto.Sender,
		Type:           proto.Type,
		Content:        b[m.content.start:m.content.end],
		PrevEvents:     ids[:n:n],
		AuthEvents:     ids[n:],
		Depth:          proto.Depth,
		OriginServerTS: proto.OriginServerTS,
		Hashes:         map[string]string{"sha256": contentHash},
		Signatures:     map[string]map[string]string{},
		Version:        v,
		Raw:            b,
		canonical:      true,
	}
	if proto.StateKey != nil {
		sk := *proto.StateKey
		p.StateKey = &sk
	}
	if !v.RedactsInContent() {
		p.Redacts = proto.Redacts
	}
	return p
}

// signaturesSize is the size of a signatures object holding one ed25519 signature by serverName
// with keyID: {"server":{"key":"<signature>"}}.
func signaturesSize(serverName, keyID string) int {
	var buf [256]byte
	quoted := len(appendQuoted(buf[:0], serverName)) + len(appendQuoted(buf[:0], keyID))
	return len(`{:{:""}}`) + quoted + base64.RawStdEncoding.EncodedLen(ed25519.SignatureSize)
}

// SignPDU returns the event's JSON with this server's signature added (other signatures kept),
// for an event built by BuildUnsigned or received unsigned by this server. The event ID does not
// change: signatures are not part of the reference hash.
func SignPDU(p *PDU, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	if _, ok := p.Signatures[serverName][keyID]; ok {
		return p.Raw, nil
	}
	return Sign(p.Version, p.Raw, serverName, keyID, key)
}

// contentHashLen is the length of a SHA-256 hash in unpadded base64.
const contentHashLen = (sha256.Size*8 + 5) / 6

// marks locates, in an event laid out with hashes, the parts that its content hash and reference
// hash leave out or change: the value of content, and the members hashes (with the offset of
// hashes.sha256's value), top-level redacts (empty when absent) and signatures, each with its
// leading comma.
type marks struct {
	content, hashes, redacts, signatures span
	contentHash                          int
}

type span struct{ start, end int }

// layout writes the event's members in canonical (sorted) order. Without marks, hashEvent and
// signEvent add hashes and signatures. With marks, layout writes them too: hashes with room for
// the content hash, which marks.hash fills in, and signatures empty.
func (proto Proto) layout(v Version, m *marks) ([]byte, error) {
	if !v.Known() {
		return nil, fmt.Errorf("build event: unknown room version")
	}
	if err := proto.check(v); err != nil {
		return nil, err
	}
	b := make([]byte, 0, proto.sizeHint(m != nil))
	b = append(b, `{"auth_events":`...)
	b = appendStringArray(b, proto.AuthEvents)
	b = append(b, `,"content":`...)
	contentStart := len(b)
	b, err := proto.appendContent(b, v)
	if err != nil {
		return nil, err
	}
	var mk marks
	mk.content = span{contentStart, len(b)}
	b = append(b, `,"depth":`...)
	b = strconv.AppendInt(b, proto.Depth, 10)
	if m != nil {
		mk.hashes.start = len(b)
		b = append(b, `,"hashes":{"sha256":"`...)
		mk.contentHash = len(b)
		b = append(b, make([]byte, contentHashLen)...)
		b = append(b, `"}`...)
		mk.hashes.end = len(b)
	}
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, proto.OriginServerTS, 10)
	b = append(b, `,"prev_events":`...)
	b = appendStringArray(b, proto.PrevEvents)
	mk.redacts = span{len(b), len(b)}
	if proto.Redacts != "" && !v.RedactsInContent() {
		b = append(b, `,"redacts":`...)
		b = appendQuoted(b, proto.Redacts)
		mk.redacts.end = len(b)
	}
	if proto.RoomID != "" {
		b = append(b, `,"room_id":`...)
		b = appendQuoted(b, proto.RoomID)
	}
	b = append(b, `,"sender":`...)
	b = appendQuoted(b, proto.Sender)
	if m != nil {
		mk.signatures.start = len(b)
		b = append(b, `,"signatures":{}`...)
		mk.signatures.end = len(b)
	}
	if proto.StateKey != nil {
		b = append(b, `,"state_key":`...)
		b = appendQuoted(b, *proto.StateKey)
	}
	b = append(b, `,"type":`...)
	b = appendQuoted(b, proto.Type)
	b = append(b, '}')
	if m != nil {
		*m = mk
	}
	return b, nil
}

// sizeHint is at least the size of the laid-out event unless its strings need escapes.
func (proto Proto) sizeHint(hashed bool) int {
	n := len(`{"auth_events":[],"content":,"depth":,"origin_server_ts":,"prev_events":[],"redacts":"","room_id":"","sender":"","state_key":"","type":""}`) +
		2*20 + max(len(proto.Content), len(`{}`)) + len(proto.Redacts) + len(proto.RoomID) + len(proto.Sender) + len(proto.Type)
	if hashed {
		n += len(`,"hashes":{"sha256":""},"signatures":{}`) + contentHashLen
	}
	if proto.StateKey != nil {
		n += len(*proto.StateKey)
	}
	if proto.Redacts != "" {
		n += len(`,"redacts":""`) // when it goes into content
	}
	for _, ids := range [][]string{proto.PrevEvents, proto.AuthEvents} {
		for _, id := range ids {
			n += len(id) + len(`"",`)
		}
	}
	return n
}

// appendContent appends the event's content as canonical JSON, with "redacts" in it from room
// version 11.
func (proto Proto) appendContent(b []byte, v Version) ([]byte, error) {
	if len(proto.Content) == 0 {
		if proto.Redacts != "" && v.RedactsInContent() {
			b = append(b, `{"redacts":`...)
			return append(appendQuoted(b, proto.Redacts), '}'), nil
		}
		return append(b, `{}`...), nil
	}
	start := len(b)
	b, err := AppendCanonical(b, proto.Content)
	if err != nil {
		return nil, fmt.Errorf("build event: content: %w", err)
	}
	if len(b) == start || b[start] != '{' {
		return nil, fmt.Errorf("%w: content must be an object", ErrInvalid)
	}
	if proto.Redacts == "" || !v.RedactsInContent() {
		return b, nil
	}
	content := b[start:]
	if have, ok := stringMember(content, "redacts"); ok {
		if have != proto.Redacts {
			return nil, fmt.Errorf("%w: content.redacts %q differs from Redacts %q", ErrInvalid, have, proto.Redacts)
		}
		return b, nil // canonical strings are equal exactly when their bytes are
	}
	edited, err := appendEdited(nil, content, edit{"redacts", appendQuoted(nil, proto.Redacts)})
	if err != nil {
		return nil, err
	}
	return append(b[:start], edited...), nil
}

// hash fills in the content hash of the event b laid out with marks m and returns its reference
// hash. Both hash b in place, skipping what they leave out: the content hash everything but
// hashes and signatures; the reference hash (over the redacted event without signatures) also
// leaves out top-level redacts and takes content redacted.
func (m marks) hash(v Version, eventType string, b []byte) [sha256.Size]byte {
	var sum [sha256.Size]byte
	h := sha256.New()
	h.Write(b[:m.hashes.start])
	h.Write(b[m.hashes.end:m.signatures.start])
	h.Write(b[m.signatures.end:])
	base64.RawStdEncoding.Encode(b[m.contentHash:m.contentHash+contentHashLen], h.Sum(sum[:0]))

	var scratch [128]byte
	h.Reset()
	h.Write(b[:m.content.start])
	h.Write(appendRedactedContent(scratch[:0], v, eventType, b[m.content.start:m.content.end]))
	h.Write(b[m.content.end:m.redacts.start])
	h.Write(b[m.redacts.end:m.signatures.start])
	h.Write(b[m.signatures.end:])
	return [sha256.Size]byte(h.Sum(sum[:0]))
}

// check validates what Parse would otherwise only find after signing.
func (p *Proto) check(v Version) error {
	createV12 := v.RoomIDFromCreateEvent() && p.Type == "m.room.create"
	switch {
	case createV12 && p.RoomID != "":
		return fmt.Errorf("%w: an m.room.create event of room version %s has no room_id", ErrInvalid, v)
	case !createV12 && p.RoomID == "":
		return fmt.Errorf("%w: room_id is missing", ErrInvalid)
	case p.Type == "":
		return fmt.Errorf("%w: type is missing", ErrInvalid)
	case p.Depth < 0 || p.Depth > maxSafeInt:
		return fmt.Errorf("%w: depth %d out of range", ErrInvalid, p.Depth)
	case p.OriginServerTS < -maxSafeInt || p.OriginServerTS > maxSafeInt:
		return fmt.Errorf("%w: origin_server_ts %d out of range", ErrInvalid, p.OriginServerTS)
	}
	if _, err := serverOf(p.Sender); err != nil {
		return fmt.Errorf("%w: sender: %w", ErrInvalid, err)
	}
	var stateKey []string
	if p.StateKey != nil {
		stateKey = []string{*p.StateKey}
	}
	for _, strs := range [][]string{{p.RoomID, p.Sender, p.Type, p.Redacts}, stateKey, p.PrevEvents, p.AuthEvents} {
		for _, s := range strs {
			if !utf8.ValidString(s) {
				return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalid, s)
			}
		}
	}
	return nil
}

// checkLimits checks what parseCanonical would find wrong with the event that check does not:
// the size, sigil and number of IDs. It checks in parseCanonical's (key) order, so that an event
// with several faults gets the error parsing it would give.
func (p *Proto) checkLimits(v Version) error {
	if err := checkIDList("auth_events", p.AuthEvents, maxAuthEvents); err != nil {
		return err
	}
	if err := checkIDList("prev_events", p.PrevEvents, maxPrevEvents); err != nil {
		return err
	}
	if p.Redacts != "" && !v.RedactsInContent() {
		if err := checkID("redacts", p.Redacts, '$'); err != nil {
			return err
		}
	}
	if p.RoomID != "" {
		if err := checkID("room_id", p.RoomID, '!'); err != nil {
			return err
		}
	}
	if err := checkID("sender", p.Sender, '@'); err != nil {
		return err
	}
	if p.StateKey != nil {
		if err := checkID("state_key", *p.StateKey, 0); err != nil {
			return err
		}
	}
	return checkID("type", p.Type, 0)
}

func appendStringArray(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, s)
	}
	return append(b, ']')
}
