package event

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Content hash and reference hash (server-server API, "Calculating the content hash for an
// event" and "Calculating the reference hash for an event"), and the identifiers derived from
// the reference hash (rooms/v4 "Event IDs"; rooms/v12 room IDs).

var (
	// ErrContentHashMismatch: hashes.sha256 does not match the event. The spec says to continue
	// with the redacted form of the event.
	ErrContentHashMismatch = errors.New("content hash does not match")
	// ErrNoContentHash: the event has no usable hashes.sha256.
	ErrNoContentHash = errors.New("event has no sha256 content hash")
)

// ContentHash returns the SHA-256 content hash of an event: the hash of its canonical JSON
// without the unsigned, signatures and hashes keys.
func ContentHash(eventJSON []byte) ([sha256.Size]byte, error) {
	canon, err := Canonical(eventJSON)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return contentHash(canon)
}

func contentHash(canon []byte) ([sha256.Size]byte, error) {
	buf, err := appendWithout(make([]byte, 0, len(canon)), canon, "hashes", "signatures", "unsigned")
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("%w: event is not a JSON object", ErrInvalid)
	}
	return sha256.Sum256(buf), nil
}

// CheckContentHash checks the event's hashes.sha256 against its content. It returns an error
// matching ErrContentHashMismatch or ErrNoContentHash when the check fails.
func CheckContentHash(eventJSON []byte) error {
	canon, err := Canonical(eventJSON)
	if err != nil {
		return err
	}
	return checkContentHash(canon)
}

func checkContentHash(canon []byte) error {
	hashes, ok := member(canon, "hashes")
	if !ok {
		return ErrNoContentHash
	}
	claimed, ok := stringMember(hashes, "sha256")
	if !ok {
		return ErrNoContentHash
	}
	want, err := decodeBase64(claimed)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: hashes.sha256 is not a base64 SHA-256 hash", ErrNoContentHash)
	}
	got, err := contentHash(canon)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return ErrContentHashMismatch
	}
	return nil
}

// ReferenceHash returns the reference hash of an event: SHA-256 of the canonical JSON of its
// redacted form without signatures and unsigned.
func ReferenceHash(v Version, eventJSON []byte) ([sha256.Size]byte, error) {
	canon, err := Canonical(eventJSON)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return referenceHash(v, canon)
}

func referenceHash(v Version, canon []byte) ([sha256.Size]byte, error) {
	msg, err := appendRedacted(make([]byte, 0, 512), v, canon, true)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(msg), nil
}

// EventID computes the ID of an event in the v4+ format: "$" and the URL-safe unpadded base64 of
// the reference hash.
func EventID(v Version, eventJSON []byte) (string, error) {
	h, err := ReferenceHash(v, eventJSON)
	if err != nil {
		return "", err
	}
	return eventIDFromHash(h), nil
}

func eventIDFromHash(h [sha256.Size]byte) string {
	return "$" + base64.RawURLEncoding.EncodeToString(h[:])
}

// RoomIDFromCreateEvent gives the room ID of a room whose version has RoomIDFromCreateEvent (v12+):
// the m.room.create event's ID with the sigil "!" instead of "$".
func RoomIDFromCreateEvent(createEventID string) string {
	return "!" + strings.TrimPrefix(createEventID, "$")
}

// decodeBase64 decodes unpadded base64, also accepting padding and the URL-safe alphabet (the
// spec asks implementations to accept padding "wherever possible").
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}
