package serverkey

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Key responses are small; anything larger is not one.
const maxKeyResponseBytes = 1 << 20

func encodeKey(pub []byte) string { return base64.RawStdEncoding.EncodeToString(pub) }

// fetchDirect asks server for its keys (GET /_matrix/key/v2/server) and stores them.
func (r *Ring) fetchDirect(ctx context.Context, server string) error {
	data, err := r.client.Do(ctx, server, "GET", "/_matrix/key/v2/server", nil)
	if err != nil {
		return err
	}
	if len(data) > maxKeyResponseBytes {
		return fmt.Errorf("%w: larger than %d bytes", ErrInvalidResponse, maxKeyResponseBytes)
	}
	res, err := ParseResponse(data, server)
	if err != nil {
		return fmt.Errorf("keys of %s: %w", server, err)
	}
	return r.storeResponses(ctx, server, []*Response{res})
}

// fetchFromNotary asks notary n for server's keys (POST /_matrix/key/v2/query). Each returned
// response must be signed by the notary with a configured key and by server itself.
func (r *Ring) fetchFromNotary(ctx context.Context, n Notary, server, keyID string, minValid int64) error {
	query := map[string]any{"server_keys": map[string]any{
		server: map[string]any{keyID: map[string]any{"minimum_valid_until_ts": minValid}},
	}}
	data, err := r.client.Do(ctx, n.ServerName, "POST", "/_matrix/key/v2/query", query)
	if err != nil {
		return err
	}
	resps, err := parseNotaryAnswer(data, n, server)
	if err != nil {
		return err
	}
	if len(resps) == 0 {
		return fmt.Errorf("notary %s has no keys of %s", n.ServerName, server)
	}
	return r.storeResponses(ctx, n.ServerName, resps)
}

// parseNotaryAnswer verifies the server_keys of a notary's answer that are about server.
func parseNotaryAnswer(data []byte, n Notary, server string) ([]*Response, error) {
	var answer struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return nil, fmt.Errorf("%w: notary %s: %w", ErrInvalidResponse, n.ServerName, err)
	}
	var out []*Response
	var errs []error
	for _, raw := range answer.ServerKeys {
		var head struct {
			ServerName string `json:"server_name"`
		}
		if json.Unmarshal(raw, &head) != nil || head.ServerName != server {
			continue // not asked for
		}
		if err := verifyNotary(raw, n); err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := ParseResponse(raw, server)
		if err != nil {
			errs = append(errs, fmt.Errorf("keys of %s from notary %s: %w", server, n.ServerName, err))
			continue
		}
		out = append(out, res)
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
