-- Signing keys of other servers (server-server API, "Retrieving server keys"), fetched from the
-- server itself or through a notary. They are kept so that events signed long ago still verify,
-- and so that this server can answer as a notary (POST /_matrix/key/v2/query) for a server that
-- is down. One row per (server, key): the newest key response that listed the key.
CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    -- Unpadded base64 of the ed25519 public key.
    public_key     TEXT NOT NULL,
    -- valid_until_ts of the key response (a key is trusted up to the lesser of this and seven
    -- days after fetched_ts).
    valid_until_ts BIGINT NOT NULL,
    -- expired_ts of a key the response listed in old_verify_keys; 0 for a key in verify_keys.
    expired_ts     BIGINT NOT NULL,
    fetched_ts     BIGINT NOT NULL,
    -- The server the response came from: server_name itself or a notary.
    from_server    TEXT NOT NULL,
    -- The key response as server_name signed it (notaries' signatures removed), served again
    -- when this server answers as a notary.
    key_json       TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
