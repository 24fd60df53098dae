package event

import (
	"crypto/ed25519"
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
	b, err := proto.layout(v)
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
func BuildUnsigned(v Version, proto Proto, serverName, keyID string) (*PDU, error) {
	b, err := proto.layout(v)
	if err != nil {
		return nil, err
	}
	withHash, msg, err := hashEvent(v, b)
	if err != nil {
		return nil, err
	}
	p, err := parseCanonical(v, withHash, msg)
	if err != nil {
		return nil, err
	}
	if n := len(withHash) - len(`{}`) + signaturesSize(serverName, keyID); n > MaxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes as signed canonical JSON, limit %d", ErrTooLarge, n, MaxPDUSize)
	}
	return p, nil
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

// layout writes the event's members in canonical (sorted) order; hashes and signatures are added
// by hashEvent and signEvent.
func (proto Proto) layout(v Version) ([]byte, error) {
	if !v.Known() {
		return nil, fmt.Errorf("build event: unknown room version")
	}
	if err := proto.check(v); err != nil {
		return nil, err
	}
	content := []byte("{}")
	if len(proto.Content) > 0 {
		var err error
		if content, err = Canonical(proto.Content); err != nil {
			return nil, fmt.Errorf("build event: content: %w", err)
		}
		if len(content) == 0 || content[0] != '{' {
			return nil, fmt.Errorf("%w: content must be an object", ErrInvalid)
		}
	}
	if proto.Redacts != "" && v.RedactsInContent() {
		if have, ok := stringMember(content, "redacts"); ok && have != proto.Redacts {
			return nil, fmt.Errorf("%w: content.redacts %q differs from Redacts %q", ErrInvalid, have, proto.Redacts)
		}
		var err error
		if content, err = appendEdited(nil, content, edit{"redacts", appendQuoted(nil, proto.Redacts)}); err != nil {
			return nil, err
		}
	}

	b := make([]byte, 0, len(content)+256+50*(len(proto.PrevEvents)+len(proto.AuthEvents)))
	b = append(b, `{"auth_events":`...)
	b = appendStringArray(b, proto.AuthEvents)
	b = append(b, `,"content":`...)
	b = append(b, content...)
	b = append(b, `,"depth":`...)
	b = strconv.AppendInt(b, proto.Depth, 10)
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, proto.OriginServerTS, 10)
	b = append(b, `,"prev_events":`...)
	b = appendStringArray(b, proto.PrevEvents)
	if proto.Redacts != "" && !v.RedactsInContent() {
		b = append(b, `,"redacts":`...)
		b = appendQuoted(b, proto.Redacts)
	}
	if proto.RoomID != "" {
		b = append(b, `,"room_id":`...)
		b = appendQuoted(b, proto.RoomID)
	}
	b = append(b, `,"sender":`...)
	b = appendQuoted(b, proto.Sender)
	if proto.StateKey != nil {
		b = append(b, `,"state_key":`...)
		b = appendQuoted(b, *proto.StateKey)
	}
	b = append(b, `,"type":`...)
	b = appendQuoted(b, proto.Type)
	b = append(b, '}')
	return b, nil
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
	strs := []string{p.RoomID, p.Sender, p.Type, p.Redacts}
	if p.StateKey != nil {
		strs = append(strs, *p.StateKey)
	}
	strs = append(strs, p.PrevEvents...)
	strs = append(strs, p.AuthEvents...)
	for _, s := range strs {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalid, s)
		}
	}
	return nil
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
