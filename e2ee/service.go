package e2ee

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Limits on what clients may upload. The request body limit (http.max_body_bytes) applies first.
const (
	// DefaultMaxOneTimeKeysPerDevice caps the unclaimed one-time keys stored for one device (all
	// algorithms together). Olm clients keep at most 100 private one-time keys, so a device never
	// needs more; an upload that would pass the cap is refused whole with M_TOO_LARGE.
	DefaultMaxOneTimeKeysPerDevice = 1000
	// MaxOneTimeKeysPerUpload caps the one-time keys of one /keys/upload (M_TOO_LARGE).
	MaxOneTimeKeysPerUpload = 200
	// MaxFallbackKeysPerUpload caps the fallback keys (one per algorithm) of one upload.
	MaxFallbackKeysPerUpload = 10
	// MaxKeyObjectBytes caps a device-key or cross-signing key object (canonical JSON).
	MaxKeyObjectBytes = 16 << 10
	// MaxOneTimeKeyBytes caps one one-time or fallback key (canonical JSON).
	MaxOneTimeKeyBytes = 4 << 10
	// MaxSignedObjectsPerUpload caps the objects of one /keys/signatures/upload.
	MaxSignedObjectsPerUpload = 1000
	// MaxClaimsPerRequest caps the (user, device) pairs of one /keys/claim.
	MaxClaimsPerRequest = 10000
	// maxIDBytes caps device IDs, algorithms and key IDs.
	maxIDBytes = 255
	// claimChunk is how many devices one claim transaction visits.
	claimChunk = 100
	// defaultRemoteTimeout is the wait for other servers when the client gives none.
	defaultRemoteTimeout = 10 * time.Second
)

// ErrInvalidSignature is M_INVALID_SIGNATURE (cross-signing: a signature does not verify).
var ErrInvalidSignature = &spec.Error{Code: "M_INVALID_SIGNATURE", Status: http.StatusBadRequest, Message: "Invalid signature"}

// Waker wakes syncing clients after a change commits: Wake wakes the users' own syncs, WakeSharing
// those of every user who shares a room with one of them (and theirs).
type Waker interface {
	Wake(userIDs ...string)
	WakeSharing(userIDs ...string)
}

// RemoteKeys reaches other servers' users (federation /user/keys/query and /user/keys/claim).
type RemoteKeys interface {
	QueryKeys(ctx context.Context, serverName string, deviceKeys map[string][]string) (RemoteQuery, error)
	ClaimKeys(ctx context.Context, serverName string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// RemoteQuery is a remote server's answer to a key query.
type RemoteQuery struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
}

// Options configure the service.
type Options struct {
	ServerName string
	// Remote reaches other servers; nil reports their users in failures.
	Remote RemoteKeys
	// MaxOneTimeKeysPerDevice overrides DefaultMaxOneTimeKeysPerDevice when positive.
	MaxOneTimeKeysPerDevice int
}

// Service is the key-management service.
type Service struct {
	store *storage.Store
	waker Waker
	opts  Options
	log   *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// New builds the service. waker may be nil (nothing is woken).
func New(store *storage.Store, waker Waker, opts Options, log *slog.Logger) *Service {
	if opts.MaxOneTimeKeysPerDevice <= 0 {
		opts.MaxOneTimeKeysPerDevice = DefaultMaxOneTimeKeysPerDevice
	}
	return &Service{store: store, waker: waker, opts: opts, log: log, Now: time.Now}
}

func (s *Service) wake(users ...string) {
	if s.waker != nil && len(users) > 0 {
		s.waker.Wake(users...)
	}
}

func (s *Service) wakeSharing(users ...string) {
	if s.waker != nil && len(users) > 0 {
		s.waker.WakeSharing(users...)
	}
}

// localUser returns the localpart of a user ID of this server; ok is false for another server's
// user or a malformed ID.
func (s *Service) localUser(userID string) (localpart string, ok bool) {
	u, err := spec.ParseUserID(userID)
	if err != nil || u.ServerName() != s.opts.ServerName {
		return "", false
	}
	return u.Localpart(), true
}
