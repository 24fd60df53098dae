-- End-to-end encryption keys (module "End-to-End Encryption": key distribution, cross-signing,
-- device lists). The server keeps public keys and signatures only. Key objects are stored as
-- canonical JSON without "unsigned" and served as stored bytes.
--
-- Per-device tables are keyed like devices (localpart, device_id): they hold local devices only
-- and go in the same transaction as the device. device_keys keeps the full user ID too, so that
-- deleting a device can record its device-list change where only the localpart is known.

CREATE TABLE device_keys (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id)
);

-- Unclaimed one-time keys; a claim deletes the row it hands out. created_ts orders claims (keys
-- of one upload are equivalent).
CREATE TABLE one_time_keys (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id, algorithm, key_id)
);
CREATE INDEX one_time_keys_claim ON one_time_keys (localpart, device_id, algorithm, created_ts, key_id);

-- The latest fallback key of each algorithm; used once it was handed out (it stays claimable).
CREATE TABLE fallback_keys (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (localpart, device_id, algorithm)
);

-- The current cross-signing keys of each user: key_usage is master, self_signing or user_signing;
-- public_key is the unpadded base64 key (its key ID is "ed25519:" + public_key). stream_pos is the
-- device_lists position of the last change.
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_usage  TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_usage)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the signed key when it is
-- served: target_key_id is a device ID or a master key's public key; signer_key_id is the full key
-- ID of the signing key ("ed25519:...").
CREATE TABLE cross_signing_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX cross_signing_signatures_signer ON cross_signing_signatures (signer_user_id, signer_key_id);

-- The device_lists stream: the latest position at which each user's devices or cross-signing keys
-- changed (stream counter "device_lists"). One row per user: a reader of (from, to] that misses
-- an older change of a user because a newer one replaced it sees the user in its next range.
CREATE TABLE device_list_changes (
    user_id TEXT PRIMARY KEY,
    pos     BIGINT NOT NULL
);
CREATE INDEX device_list_changes_pos ON device_list_changes (pos);
