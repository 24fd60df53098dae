package storage

import (
	"context"
	"database/sql"
)

// ServerKey is a signing key of another server as last fetched (table server_keys).
type ServerKey struct {
	ServerName string
	KeyID      string
	PublicKey  string // unpadded base64
	// ValidUntilTS is the valid_until_ts of the key response the key came in.
	ValidUntilTS int64
	// ExpiredTS is set for a key listed in old_verify_keys; 0 for a current key.
	ExpiredTS  int64
	FetchedTS  int64
	FromServer string
	// KeyJSON is the whole key response, signed by ServerName.
	KeyJSON []byte
}

// StoreServerKeys saves keys of one or more key responses. A key already stored is replaced
// only by one from a response valid at least as long, so a stale answer (a notary's cached
// copy, say) never overwrites a fresher one.
func (c Conn) StoreServerKeys(ctx context.Context, keys []ServerKey) error {
	for _, k := range keys {
		_, err := c.exec(ctx, `INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts,
				fetched_ts, from_server, key_json)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
				valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
				fetched_ts = excluded.fetched_ts, from_server = excluded.from_server, key_json = excluded.key_json
			WHERE excluded.valid_until_ts >= server_keys.valid_until_ts`,
			k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS, k.FetchedTS, k.FromServer, string(k.KeyJSON))
		if err != nil {
			return err
		}
	}
	return nil
}

// ServerKeys returns the stored keys of a server, by key ID.
func (c Conn) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	return collect(ctx, c, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, from_server, key_json
		FROM server_keys WHERE server_name = $1 ORDER BY key_id`, []any{serverName}, func(r *sql.Rows) (ServerKey, error) {
		var k ServerKey
		var js string
		err := r.Scan(&k.ServerName, &k.KeyID, &k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS, &k.FromServer, &js)
		k.KeyJSON = []byte(js)
		return k, err
	})
}
