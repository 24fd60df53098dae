package e2ee

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	gosync "sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// QueryResponse is the answer of POST /keys/query.
type QueryResponse struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

// Usages of cross-signing keys.
const (
	UsageMaster      = "master"
	UsageSelfSigning = "self_signing"
	UsageUserSigning = "user_signing"
)

// QueryKeys returns the device and cross-signing keys of the users in deviceKeys (user → device
// IDs, empty for all devices). Each local user queried gets a device_keys entry (empty when they
// have no keys); device keys carry unsigned.device_display_name. Signatures uploaded through
// /keys/signatures/upload are merged into the keys they sign, as far as requester may see them:
// on a device, its owner's (self-signing) signatures; on a master key, its owner's and the
// requester's own (user-signing) signatures. user_signing_keys holds the requester's own key only.
// Users of other servers are asked through RemoteKeys within timeout (0: 10 s); servers that cannot
// be asked are listed in failures.
func (s *Service) QueryKeys(ctx context.Context, requester string, deviceKeys map[string][]string, timeout time.Duration) (*QueryResponse, error) {
	resp := &QueryResponse{Failures: map[string]any{}, DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	var localparts, localUsers []string
	userOf := map[string]string{}
	remote := map[string]map[string][]string{} // server → user → devices
	for _, user := range slices.Sorted(maps.Keys(deviceKeys)) {
		u, err := spec.ParseUserID(user)
		if err != nil {
			return nil, spec.ErrInvalidParam.Withf("device_keys: invalid user ID %q", user)
		}
		if u.ServerName() != s.opts.ServerName {
			if remote[u.ServerName()] == nil {
				remote[u.ServerName()] = map[string][]string{}
			}
			remote[u.ServerName()][user] = deviceKeys[user]
			continue
		}
		localparts = append(localparts, u.Localpart())
		localUsers = append(localUsers, user)
		userOf[u.Localpart()] = user
		resp.DeviceKeys[user] = map[string]json.RawMessage{}
	}

	var remoteMu gosync.Mutex
	wait := askRemote(ctx, s.opts.Remote != nil, timeout, remote, resp.Failures, &remoteMu,
		func(ctx context.Context, server string, users map[string][]string) (RemoteQuery, error) {
			return s.opts.Remote.QueryKeys(ctx, server, users)
		},
		func(users map[string][]string, res RemoteQuery) {
			for user, devs := range res.DeviceKeys {
				if _, asked := users[user]; asked {
					resp.DeviceKeys[user] = devs
				}
			}
			for user, k := range res.MasterKeys {
				if _, asked := users[user]; asked {
					resp.MasterKeys[user] = k
				}
			}
			for user, k := range res.SelfSigningKeys {
				if _, asked := users[user]; asked {
					resp.SelfSigningKeys[user] = k
				}
			}
		})
	err := s.queryLocal(ctx, requester, localparts, localUsers, userOf, deviceKeys, resp, &remoteMu)
	wait()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// askRemote sends one request per server of remote in parallel (ask), each bounded by timeout
// (defaultRemoteTimeout if not positive), and hands each answer to merge, or records the server in
// failures, under mu. Without federation (available false) every server is a failure. The
// returned function waits for every request.
func askRemote[Q, R any](ctx context.Context, available bool, timeout time.Duration, remote map[string]Q, failures map[string]any,
	mu *gosync.Mutex, ask func(ctx context.Context, server string, q Q) (R, error), merge func(q Q, r R)) (wait func()) {
	if len(remote) == 0 {
		return func() {}
	}
	if timeout <= 0 {
		timeout = defaultRemoteTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	var wg gosync.WaitGroup
	for server, q := range remote {
		if !available {
			mu.Lock()
			failures[server] = remoteFailure("Federation is not available")
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := ask(rctx, server, q)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[server] = remoteFailure(err.Error())
				return
			}
			merge(q, r)
		}()
	}
	return func() {
		wg.Wait()
		cancel()
	}
}

func remoteFailure(msg string) map[string]any {
	return map[string]any{"status": 503, "message": msg}
}

// queryLocal fills resp with the keys of local users (three queries, whatever the number of users).
func (s *Service) queryLocal(ctx context.Context, requester string, localparts, users []string, userOf map[string]string,
	want map[string][]string, resp *QueryResponse, mu *gosync.Mutex) error {
	if len(users) == 0 {
		return nil
	}
	c := s.store.Read()
	devs, err := c.DeviceKeysOf(ctx, localparts)
	if err != nil {
		return err
	}
	xs, err := c.CrossSigningKeysOf(ctx, users)
	if err != nil {
		return err
	}
	var sigs []storage.KeySignature
	if len(devs) > 0 || len(xs) > 0 {
		if sigs, err = c.KeySignaturesOn(ctx, users); err != nil {
			return err
		}
	}
	// target user → target key → signer → key ID → signature, as far as requester may see them.
	visible := map[[2]string]map[string]map[string]string{}
	for _, sg := range sigs {
		if sg.SignerUserID != sg.TargetUserID && sg.SignerUserID != requester {
			continue // another user's user-signing signature
		}
		k := [2]string{sg.TargetUserID, sg.TargetKeyID}
		if visible[k] == nil {
			visible[k] = map[string]map[string]string{}
		}
		if visible[k][sg.SignerUserID] == nil {
			visible[k][sg.SignerUserID] = map[string]string{}
		}
		visible[k][sg.SignerUserID][sg.SignerKeyID] = sg.Signature
	}

	out := map[string]map[string]json.RawMessage{}
	for _, d := range devs {
		user := userOf[d.Localpart]
		if ids := want[user]; len(ids) > 0 && !slices.Contains(ids, d.DeviceID) {
			continue
		}
		extra := visible[[2]string{user, d.DeviceID}]
		// Only the owner's signatures on their own devices: a device is not a master key, so no
		// user-signing signature may sit on it.
		for signer := range extra {
			if signer != user {
				delete(extra, signer)
			}
		}
		unsigned := map[string]any{}
		if d.DisplayName != nil {
			unsigned["device_display_name"] = *d.DisplayName
		}
		js, err := withSignatures(d.KeyJSON, extra, unsigned)
		if err != nil {
			return err
		}
		if out[user] == nil {
			out[user] = map[string]json.RawMessage{}
		}
		out[user][d.DeviceID] = js
	}
	mu.Lock()
	defer mu.Unlock()
	for user, m := range out {
		resp.DeviceKeys[user] = m
	}
	for _, x := range xs {
		switch x.Usage {
		case UsageMaster:
			js, err := withSignatures(x.KeyJSON, visible[[2]string{x.UserID, x.PublicKey}], nil)
			if err != nil {
				return err
			}
			resp.MasterKeys[x.UserID] = js
		case UsageSelfSigning:
			resp.SelfSigningKeys[x.UserID] = x.KeyJSON
		case UsageUserSigning:
			if x.UserID == requester {
				resp.UserSigningKeys[x.UserID] = x.KeyJSON
			}
		}
	}
	return nil
}
