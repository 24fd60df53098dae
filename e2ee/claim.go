package e2ee

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	gosync "sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// ClaimResponse is the answer of POST /keys/claim.
type ClaimResponse struct {
	Failures    map[string]any                                   `json:"failures"`
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// claim is one (user, device, algorithm) of a claim request.
type claim struct {
	userID, localpart, deviceID, algorithm string
}

// ClaimKeys hands out one key per (user, device) of want (user → device → algorithm): the oldest
// unclaimed one-time key, or else the device's fallback key, which is marked used and stays
// claimable. Each one-time key is handed out at most once, whatever runs concurrently. Devices
// with neither are left out of the answer. Users of other servers go through RemoteKeys within
// timeout (0: 10 s); servers that cannot be asked are listed in failures.
func (s *Service) ClaimKeys(ctx context.Context, want map[string]map[string]string, timeout time.Duration) (*ClaimResponse, error) {
	resp := &ClaimResponse{Failures: map[string]any{}, OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	var local []claim
	remote := map[string]map[string]map[string]string{}
	n := 0
	for user, devs := range want {
		u, err := spec.ParseUserID(user)
		if err != nil {
			return nil, spec.ErrInvalidParam.Withf("one_time_keys: invalid user ID %q", user)
		}
		if n += len(devs); n > MaxClaimsPerRequest {
			return nil, spec.ErrTooLarge.Withf("At most %d keys may be claimed at once", MaxClaimsPerRequest)
		}
		for dev, alg := range devs {
			if alg == "" || len(alg) > maxIDBytes || len(dev) > maxIDBytes {
				return nil, spec.ErrInvalidParam.Withf("one_time_keys.%s: invalid device ID or algorithm", user)
			}
		}
		if u.ServerName() != s.opts.ServerName {
			remote[u.ServerName()] = mergeClaims(remote[u.ServerName()], user, devs)
			continue
		}
		for dev, alg := range devs {
			local = append(local, claim{userID: user, localpart: u.Localpart(), deviceID: dev, algorithm: alg})
		}
	}

	var mu gosync.Mutex
	wait := askRemote(ctx, s.opts.Remote != nil, timeout, remote, resp.Failures, &mu,
		func(ctx context.Context, server string, users map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
			return s.opts.Remote.ClaimKeys(ctx, server, users)
		},
		func(users map[string]map[string]string, res map[string]map[string]map[string]json.RawMessage) {
			for user, devs := range res {
				if _, asked := users[user]; asked {
					resp.OneTimeKeys[user] = devs
				}
			}
		})
	err := s.claimLocal(ctx, local, resp, &mu)
	wait()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func mergeClaims(m map[string]map[string]string, user string, devs map[string]string) map[string]map[string]string {
	if m == nil {
		m = map[string]map[string]string{}
	}
	m[user] = devs
	return m
}

// claimLocal claims local keys in transactions of claimChunk devices, visiting devices in sorted
// order so that concurrent claims take row locks in the same order and never deadlock.
func (s *Service) claimLocal(ctx context.Context, claims []claim, resp *ClaimResponse, mu *gosync.Mutex) error {
	slices.SortFunc(claims, func(a, b claim) int {
		if a.localpart != b.localpart {
			return cmp.Compare(a.localpart, b.localpart)
		}
		return cmp.Compare(a.deviceID, b.deviceID)
	})
	type got struct {
		c   claim
		key storage.OneTimeKey
	}
	claimed := map[string]bool{}
	for start := 0; start < len(claims); start += claimChunk {
		chunk := claims[start:min(start+claimChunk, len(claims))]
		var keys []got
		err := s.store.WriteRetry(ctx, func(c storage.Conn) error {
			keys = keys[:0]
			for _, cl := range chunk {
				k, err := c.ClaimOneTimeKey(ctx, cl.localpart, cl.deviceID, cl.algorithm)
				if errors.Is(err, storage.ErrNotFound) {
					k, err = c.ClaimFallbackKey(ctx, cl.localpart, cl.deviceID, cl.algorithm)
				}
				if errors.Is(err, storage.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				keys = append(keys, got{cl, k})
			}
			return nil
		})
		if err != nil {
			return err
		}
		mu.Lock()
		for _, g := range keys {
			user := resp.OneTimeKeys[g.c.userID]
			if user == nil {
				user = map[string]map[string]json.RawMessage{}
				resp.OneTimeKeys[g.c.userID] = user
			}
			user[g.c.deviceID] = map[string]json.RawMessage{g.key.Algorithm + ":" + g.key.KeyID: g.key.KeyJSON}
			claimed[g.c.userID] = true
		}
		mu.Unlock()
	}
	// The claimed devices' syncs report fewer keys now (device_one_time_keys_count).
	s.wake(slices.Collect(maps.Keys(claimed))...)
	return nil
}
