package xmatrix

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Errors of Verify. All but ErrNotJSON mean 401 M_UNAUTHORIZED.
var (
	ErrMissing          = errors.New("no X-Matrix Authorization header")
	ErrWrongDestination = errors.New("request is for another server")
	ErrUnknownKey       = errors.New("signing key of the origin not found")
	ErrBadSignature     = errors.New("request signature does not verify")
	ErrNotJSON          = errors.New("request body is not JSON")
)

// Request is what a request signature covers.
type Request struct {
	Method string
	// URI is the request target exactly as sent: the path from /_matrix/ on, with the query string.
	URI         string
	Origin      string
	Destination string
	// Content is the JSON body; nil or empty for a request without one.
	Content []byte
}

// signedBytes is the canonical JSON of {method, uri, origin, destination, content}, the message
// whose ed25519 signature goes into the header.
func (r Request) signedBytes() ([]byte, error) {
	b := make([]byte, 0, 128+len(r.Content))
	b = append(b, '{')
	if len(r.Content) > 0 {
		b = append(b, `"content":`...)
		b = append(b, r.Content...)
		b = append(b, ',')
	}
	b = appendField(b, "destination", r.Destination)
	b = append(b, ',')
	b = appendField(b, "method", r.Method)
	b = append(b, ',')
	b = appendField(b, "origin", r.Origin)
	b = append(b, ',')
	b = appendField(b, "uri", r.URI)
	b = append(b, '}')
	canon, err := event.Canonical(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	return canon, nil
}

func appendField(b []byte, name, val string) []byte {
	q, _ := json.Marshal(val) // a string always marshals
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `":`...)
	return append(b, q...)
}

// Sign returns the Authorization header value for r, signed by r.Origin's key keyID.
func Sign(r Request, keyID string, key ed25519.PrivateKey) (string, error) {
	if r.Destination == "" {
		return "", errors.New("xmatrix: a request must name its destination")
	}
	msg, err := r.signedBytes()
	if err != nil {
		return "", err
	}
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, msg))
	return Header{Origin: r.Origin, Destination: r.Destination, Key: keyID, Sig: sig}.String(), nil
}

// KeyFunc returns the public key keyID that server currently publishes in verify_keys (keys in
// old_verify_keys do not authenticate requests). An error matching event.ErrKeyNotFound means the
// key is unknown; other errors are failures to find out.
type KeyFunc func(ctx context.Context, server, keyID string) (ed25519.PublicKey, error)

// Verify authenticates a request received by the server named ourName. authorization holds the
// values of its Authorization headers; those of the X-Matrix scheme must all parse, name the same
// origin and verify, and there must be at least one. A request whose destination parameter names
// another server is refused; one without the parameter (older servers) is checked as if it named
// ourName. r.Origin and r.Destination are ignored. It returns the authenticated origin.
func Verify(ctx context.Context, r Request, authorization []string, ourName string, getKey KeyFunc) (string, error) {
	var origin string
	var msg []byte
	for _, value := range authorization {
		if len(value) < len(scheme) || !strings.EqualFold(value[:len(scheme)], scheme) {
			continue // another scheme (Bearer, ...) is none of ours
		}
		h, err := Parse(value)
		if err != nil {
			return "", err
		}
		if h.Destination != "" && h.Destination != ourName {
			return "", fmt.Errorf("%w: destination is %q", ErrWrongDestination, h.Destination)
		}
		if origin != "" && h.Origin != origin {
			return "", fmt.Errorf("%w: headers name two origins", ErrMalformed)
		}
		if err := spec.ValidServerName(h.Origin); err != nil {
			return "", fmt.Errorf("%w: origin: %w", ErrMalformed, err)
		}
		if msg == nil {
			r.Origin, r.Destination = h.Origin, ourName
			if msg, err = r.signedBytes(); err != nil {
				return "", err
			}
		}
		origin = h.Origin
		if !strings.HasPrefix(h.Key, "ed25519:") {
			return "", fmt.Errorf("%w: key %q is not an ed25519 key", ErrUnknownKey, h.Key)
		}
		pub, err := getKey(ctx, h.Origin, h.Key)
		if err != nil { // unknown, or it could not be fetched: either way the request is not authenticated
			return "", fmt.Errorf("%w: %s of %s: %w", ErrUnknownKey, h.Key, h.Origin, err)
		}
		sig, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(h.Sig, "="))
		if err != nil || len(sig) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, sig) {
			return "", fmt.Errorf("%w: by %s with %s", ErrBadSignature, h.Origin, h.Key)
		}
	}
	if origin == "" {
		return "", ErrMissing
	}
	return origin, nil
}
