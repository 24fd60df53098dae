package event

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Signing JSON (appendices, "Signing JSON" and "Checking for a Signature") and signing events
// (server-server API, "Signing Events").

var (
	// ErrKeyNotFound is what a KeyFunc returns (possibly wrapped) for a key it does not know or
	// that had expired at the given time. Such signatures are skipped, as the spec requires.
	ErrKeyNotFound = errors.New("signing key not found")
	// ErrNoSignature: a server whose signature is required has none we can check.
	ErrNoSignature = errors.New("missing signature")
	// ErrBadSignature: a signature does not verify.
	ErrBadSignature = errors.New("invalid signature")
)

// KeyFunc returns the ed25519 public key serverName published as keyID ("ed25519:abc"), valid at
// atTS (milliseconds since the epoch). It returns an error matching ErrKeyNotFound if there is no
// such key or it had expired by atTS (room versions 5+ require valid_until_ts >= atTS, capped at
// seven days after it was fetched); any other error aborts the verification.
type KeyFunc func(ctx context.Context, serverName, keyID string, atTS int64) (ed25519.PublicKey, error)

const ed25519Prefix = "ed25519:"

// SignJSON signs a JSON object: the canonical JSON of the object without signatures and unsigned
// is signed and the signature added under signatures[serverName][keyID]. The result is the
// canonical JSON of the whole object, unsigned included.
func SignJSON(data []byte, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	if !strings.HasPrefix(keyID, ed25519Prefix) {
		return nil, fmt.Errorf("signing key ID %q is not an ed25519 key", keyID)
	}
	canon, err := Canonical(data)
	if err != nil {
		return nil, err
	}
	msg, err := appendWithout(make([]byte, 0, len(canon)), canon, "signatures", "unsigned")
	if err != nil {
		return nil, fmt.Errorf("can only sign a JSON object: %w", err)
	}
	sigs, err := withSignature(canon, serverName, keyID, ed25519.Sign(key, msg))
	if err != nil {
		return nil, err
	}
	return appendEdited(make([]byte, 0, len(canon)+len(sigs)+16), canon, edit{"signatures", sigs})
}

// withSignature returns the canonical signatures object of obj with sig added for
// serverName/keyID (replacing an older signature by the same key).
func withSignature(obj []byte, serverName, keyID string, sig []byte) ([]byte, error) {
	sigs, ok := member(obj, "signatures")
	if !ok {
		sigs = []byte("{}")
	}
	server, ok := member(sigs, serverName)
	if !ok {
		server = []byte("{}")
	}
	quoted := appendQuoted(make([]byte, 0, 90), base64.RawStdEncoding.EncodeToString(sig))
	server, err := appendEdited(nil, server, edit{keyID, quoted})
	if err != nil {
		return nil, fmt.Errorf("%w: signatures.%s is not an object", ErrInvalid, serverName)
	}
	sigs, err = appendEdited(nil, sigs, edit{serverName, server})
	if err != nil {
		return nil, fmt.Errorf("%w: signatures is not an object", ErrInvalid)
	}
	return sigs, nil
}

// VerifyJSON checks that data carries a valid signature by serverName with key keyID.
func VerifyJSON(data []byte, serverName, keyID string, key ed25519.PublicKey) error {
	canon, err := Canonical(data)
	if err != nil {
		return err
	}
	sigs, err := signaturesOf(canon, serverName)
	if err != nil {
		return err
	}
	sig, ok := sigs[keyID]
	if !ok {
		return fmt.Errorf("%w from %s with key %s", ErrNoSignature, serverName, keyID)
	}
	msg, err := appendWithout(make([]byte, 0, len(canon)), canon, "signatures", "unsigned")
	if err != nil {
		return err
	}
	return verifyOne(key, msg, sig, serverName, keyID)
}

// VerifyJSONFrom checks that data is signed by serverName, looking its keys up with getKey: every
// signature by a known ed25519 key must verify, and there must be at least one.
func VerifyJSONFrom(ctx context.Context, data []byte, serverName string, atTS int64, getKey KeyFunc) error {
	canon, err := Canonical(data)
	if err != nil {
		return err
	}
	sigs, err := signaturesOf(canon, serverName)
	if err != nil {
		return err
	}
	msg, err := appendWithout(make([]byte, 0, len(canon)), canon, "signatures", "unsigned")
	if err != nil {
		return err
	}
	return verifyServer(ctx, msg, sigs, serverName, atTS, getKey)
}

// signaturesOf decodes signatures[serverName] of a canonical object.
func signaturesOf(canon []byte, serverName string) (map[string]string, error) {
	all, ok := member(canon, "signatures")
	if !ok {
		return nil, fmt.Errorf("%w from %s", ErrNoSignature, serverName)
	}
	server, ok := member(all, serverName)
	if !ok {
		return nil, fmt.Errorf("%w from %s", ErrNoSignature, serverName)
	}
	out := map[string]string{}
	it := members(server)
	for it.next() {
		k := decodeKey(it.key)
		s, ok := unquote(it.val)
		if !ok {
			return nil, fmt.Errorf("%w: signature %s of %s is not a string", ErrInvalid, k, serverName)
		}
		out[k] = s
	}
	if it.err != nil {
		return nil, fmt.Errorf("%w: signatures of %s are not an object", ErrInvalid, serverName)
	}
	return out, nil
}

// verifyServer implements "Checking for a Signature" for one server: signatures by algorithms
// other than ed25519 and by keys getKey does not know are skipped; all others must verify and
// at least one must remain.
func verifyServer(ctx context.Context, msg []byte, sigs map[string]string, serverName string, atTS int64, getKey KeyFunc) error {
	checked := 0
	var skipped error // why a key was skipped: told with ErrNoSignature (it may say "try again later")
	for keyID, sig := range sigs {
		if !strings.HasPrefix(keyID, ed25519Prefix) {
			continue
		}
		key, err := getKey(ctx, serverName, keyID, atTS)
		if errors.Is(err, ErrKeyNotFound) {
			skipped = err
			continue
		}
		if err != nil {
			return fmt.Errorf("fetching key %s of %s: %w", keyID, serverName, err)
		}
		if err := verifyOne(key, msg, sig, serverName, keyID); err != nil {
			return err
		}
		checked++
	}
	if checked == 0 && skipped != nil {
		return fmt.Errorf("%w from %s by a known key: %w", ErrNoSignature, serverName, skipped)
	}
	if checked == 0 {
		return fmt.Errorf("%w from %s by a known key", ErrNoSignature, serverName)
	}
	return nil
}

func verifyOne(key ed25519.PublicKey, msg []byte, sig, serverName, keyID string) error {
	raw, err := decodeBase64(sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature of %s with %s is not valid base64", ErrBadSignature, serverName, keyID)
	}
	if len(key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: key %s of %s has the wrong size", ErrBadSignature, keyID, serverName)
	}
	if !ed25519.Verify(key, msg, raw) {
		return fmt.Errorf("%w by %s with %s", ErrBadSignature, serverName, keyID)
	}
	return nil
}

// Sign adds the content hash and this server's signature to an event: hashes.sha256 is set to
// the content hash, then the redacted event (without signatures and unsigned) is signed and the
// signature added to signatures[serverName][keyID]. Signatures by other servers are kept when
// the content hash was already present and unchanged (co-signing, as for restricted joins);
// otherwise they could no longer verify and are dropped. The result is canonical JSON.
func Sign(v Version, eventJSON []byte, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	canon, err := Canonical(eventJSON)
	if err != nil {
		return nil, err
	}
	signed, _, err := signEvent(v, canon, serverName, keyID, key)
	return signed, err
}

// signEvent signs the canonical event canon. It also returns the signed message, which is the
// reference hash's input as well.
func signEvent(v Version, canon []byte, serverName, keyID string, key ed25519.PrivateKey) (signed, msg []byte, err error) {
	if !strings.HasPrefix(keyID, ed25519Prefix) {
		return nil, nil, fmt.Errorf("signing key ID %q is not an ed25519 key", keyID)
	}
	withHash, msg, err := hashEvent(v, canon)
	if err != nil {
		return nil, nil, err
	}
	signed, err = addSignature(withHash, msg, serverName, keyID, key)
	return signed, msg, err
}

// addSignature adds this server's signature of msg (the redacted event) to the event withHash.
func addSignature(withHash, msg []byte, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	sigs, err := withSignature(withHash, serverName, keyID, ed25519.Sign(key, msg))
	if err != nil {
		return nil, err
	}
	return appendEdited(make([]byte, 0, len(withHash)+120), withHash, edit{"signatures", sigs})
}

// hashEvent sets hashes.sha256 of the canonical event canon to its content hash, keeping the
// signatures already there only if the hash did not change (co-signing), and returns it with the
// redacted form that signatures and the reference hash are computed over.
func hashEvent(v Version, canon []byte) (withHash, msg []byte, err error) {
	h, err := contentHash(canon)
	if err != nil {
		return nil, nil, err
	}
	hash := base64.RawStdEncoding.EncodeToString(h[:])

	sigs := []byte("{}")
	hashes, ok := member(canon, "hashes")
	if ok && len(hashes) > 0 && hashes[0] == '{' {
		if old, _ := stringMember(hashes, "sha256"); old == hash {
			if s, ok := member(canon, "signatures"); ok && len(s) > 0 && s[0] == '{' {
				sigs = s
			}
		}
	} else {
		hashes = []byte("{}")
	}
	hashes, err = appendEdited(make([]byte, 0, len(hashes)+60), hashes, edit{"sha256", appendQuoted(nil, hash)})
	if err != nil {
		return nil, nil, err
	}
	withHash, err = appendEdited(make([]byte, 0, len(canon)+len(hashes)+len(sigs)+32), canon,
		edit{"hashes", hashes}, edit{"signatures", sigs})
	if err != nil {
		return nil, nil, err
	}
	msg, err = appendRedacted(make([]byte, 0, 512), v, withHash, true)
	return withHash, msg, err
}

// VerifyEventSignatures checks the signatures an event must carry (server-server API,
// "Validating hashes and signatures on received events"), over its redacted form:
//
//   - the sender's server, except for an invite made from a third-party invite (m.room.member,
//     membership invite, content.third_party_invite present), which any server may send;
//   - in room versions with restricted joins (v8+), for a join whose content has
//     join_authorised_via_users_server, that user's server (as Synapse checks it at this stage;
//     auth rule 4.2 asks for it on any membership, see VerifyEventSignedBy).
//
// Room version 12 adds no further signer: the room ID carries no server name. Keys are looked up
// with getKey at the event's origin_server_ts; unknown or expired keys are skipped, but each
// required server needs at least one valid signature. The content hash is not checked here (see
// CheckContentHash: a mismatch means "use the redacted event", not "drop").
func VerifyEventSignatures(ctx context.Context, v Version, p *PDU, getKey KeyFunc) error {
	servers, err := requiredSigners(v, p)
	if err != nil {
		return err
	}
	msg, err := signedBytes(v, p)
	if err != nil {
		return err
	}
	for _, server := range servers {
		if err := verifyServer(ctx, msg, p.Signatures[server], server, p.OriginServerTS, getKey); err != nil {
			return err
		}
	}
	return nil
}

// VerifyEventSignedBy checks that serverName validly signed the event (for auth rules such as
// "validly signed by the homeserver of join_authorised_via_users_server").
func VerifyEventSignedBy(ctx context.Context, v Version, p *PDU, serverName string, getKey KeyFunc) error {
	msg, err := signedBytes(v, p)
	if err != nil {
		return err
	}
	return verifyServer(ctx, msg, p.Signatures[serverName], serverName, p.OriginServerTS, getKey)
}

// signedBytes is what the event's signatures cover: the redacted event without signatures.
func signedBytes(v Version, p *PDU) ([]byte, error) {
	canon := []byte(p.Raw)
	if !p.canonical {
		var err error
		if canon, err = Canonical(canon); err != nil {
			return nil, err
		}
	}
	return appendRedacted(make([]byte, 0, 512), v, canon, true)
}

// requiredSigners lists the servers whose signatures VerifyEventSignatures requires.
func requiredSigners(v Version, p *PDU) ([]string, error) {
	var servers []string
	var membership string
	var hasThirdParty, hasAuthorisedVia bool
	var authorisedVia string
	if p.Type == "m.room.member" {
		membership, _ = stringMember(p.Content, "membership")
		_, hasThirdParty = member(p.Content, "third_party_invite")
		var raw []byte
		if raw, hasAuthorisedVia = member(p.Content, "join_authorised_via_users_server"); hasAuthorisedVia {
			var ok bool
			if authorisedVia, ok = unquote(raw); !ok {
				return nil, fmt.Errorf("%w: join_authorised_via_users_server is not a string", ErrInvalid)
			}
		}
	}
	if !(membership == "invite" && hasThirdParty) {
		server, err := serverOf(p.Sender)
		if err != nil {
			return nil, fmt.Errorf("%w: sender: %w", ErrInvalid, err)
		}
		servers = append(servers, server)
	}
	if v.RestrictedJoins() && membership == "join" && hasAuthorisedVia {
		server, err := serverOf(authorisedVia)
		if err != nil {
			return nil, fmt.Errorf("%w: join_authorised_via_users_server: %w", ErrInvalid, err)
		}
		if len(servers) == 0 || servers[0] != server {
			servers = append(servers, server)
		}
	}
	return servers, nil
}

// serverOf returns the server name of a user ID ("@localpart:server" gives "server").
func serverOf(userID string) (string, error) {
	if len(userID) < 4 || userID[0] != '@' {
		return "", fmt.Errorf("%q is not a user ID", userID)
	}
	i := strings.IndexByte(userID, ':')
	if i < 2 || i == len(userID)-1 {
		return "", fmt.Errorf("%q is not a user ID", userID)
	}
	return userID[i+1:], nil
}
