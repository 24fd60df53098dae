// End-to-end encryption (issue 5), driven through matrix-js-sdk's Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm): every device is its own MatrixClient with an in-memory
// crypto store, syncing with startClient(), so the server is exercised the way real clients use
// it: /keys/upload, /keys/query, /keys/claim, /sendToDevice, /keys/device_signing/upload,
// /keys/signatures/upload, /room_keys/*, account data for secret storage, and the E2EE parts of
// /sync (to_device, device_lists, device_one_time_keys_count, device_unused_fallback_key_types).
//
//   (a) two users with two devices each: a message from each of the four decrypts on the other three
//   (b) a device that logs in later decrypts what is sent after it appeared (device-list tracking);
//       device_lists.changed / left as users start and stop sharing an encrypted room
//   (c) cross-signing: bootstrap (password UIA to replace keys), cross-signing a device, SAS
//       verification between the two users
//   (d) key backup: a new device restores the room keys from the server-side backup (its key from
//       secret storage) and decrypts a message it never got a key for by to-device
//   (e) at rest: the database holds ciphertext only (read directly: sqlite3 / psql)
//
// Run: HS_E2E_BASE_URL=http://127.0.0.1:18008 HS_E2E_SERVER_NAME=localhost \
//      HS_E2E_DATA_DIR=/path/to/data [HS_E2E_PG_DSN=postgres://...] \
//      node --test --test-force-exit --test-concurrency=1 e2ee.test.mjs
//
// (e) reads the server's database: HS_E2E_DATA_DIR is the server's data_dir (SQLite:
// <data_dir>/homeserver.db, read with the sqlite3 CLI) and HS_E2E_PG_DSN, when set, the server's
// PostgreSQL database (read with psql). scripts/test.sh sets both. Without them that part is skipped
// and only what the client-server API serves is checked.
//
// Clients share room keys with unverified devices (the Rust crypto default; checked). The syncing
// clients record their raw /sync responses (syncClient in helpers.mjs): the E2EE fields are
// checked there, and failure messages say what the server did or did not send.
//
// Every test registers its own users; afterEach stops every client.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

import {
    MatrixError,
    Method,
    TEST_TIMEOUT_MS,
    assertUiaChallenge,
    createRoom,
    cryptoApi,
    expectMatrixError,
    immediateScheduler,
    initCrypto,
    inviteAndJoin,
    json,
    loginDevice,
    passwordAuth,
    registerUser,
    requireServer,
    sdk,
    sendText,
    startSyncing,
    stopAllClients,
    syncClient,
    tag,
    until,
} from "./helpers.mjs";

await requireServer();

afterEach(() => stopAllClients());

const opts = { timeout: TEST_TIMEOUT_MS };

/** From a send's 200 to the plaintext on another device (key query, claim, to-device, /sync). */
const DECRYPT_DEADLINE_MS = 20_000;
/** For uploaded keys, signatures and device-list changes to reach a client. */
const KEYS_DEADLINE_MS = 15_000;
/** For a room key to reach the backup: the SDK starts each backup round after a random 0-10 s delay. */
const BACKUP_DEADLINE_MS = 30_000;

const { CrossSigningKey, CryptoEvent, VerificationPhase, VerifierEvent } = cryptoApi;
const MEGOLM = "m.megolm.v1.aes-sha2";
const OLM = "m.olm.v1.curve25519-aes-sha2";
const BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2";
const enc = encodeURIComponent;

/** Every plaintext body this file sends, for the at-rest test. */
const plaintexts = [];

// ---------------------------------------------------------------------------
// Devices

/**
 * Starts `device` (a registerUser or loginDevice result) as a syncing client with Rust crypto and
 * sets device.client (raw /sync in client.rawLog), device.crypto and device.label (`sync: false`:
 * crypto only, startSyncing later). Sends go out at once and are never retried (no MatrixScheduler
 * queue), so a failing send fails the test.
 */
async function startDevice(device, label, { cryptoCallbacks, sync = true } = {}) {
    const client = syncClient(device, {
        scheduler: immediateScheduler(),
        ...(cryptoCallbacks ? { cryptoCallbacks } : {}),
    });
    const crypto = await initCrypto(client);
    assert.equal(
        crypto.globalBlacklistUnverifiedDevices,
        false,
        `${label}: the client must share room keys with unverified devices`,
    );
    Object.assign(device, { client, crypto, label });
    if (sync) await startSyncing(client);
    return device;
}

/** POST /keys/query as `device` for every device of `userIds`. */
function keysQuery(device, userIds) {
    return device.client.http.authedRequest(Method.Post, "/keys/query", undefined, {
        device_keys: Object.fromEntries(userIds.map((u) => [u, []])),
    });
}

/**
 * Waits until /keys/query (as `observer`) returns the device keys of every one of `devices`, and
 * checks they are the keys each device's crypto holds, signed by the device.
 */
async function assertKeysPublished(observer, devices) {
    const userIds = [...new Set(devices.map((d) => d.userId))];
    let res;
    await until(
        async () => {
            res = await keysQuery(observer, userIds);
            return devices.every((d) => res.device_keys?.[d.userId]?.[d.deviceId]?.keys?.[`ed25519:${d.deviceId}`]);
        },
        {
            timeoutMs: KEYS_DEADLINE_MS,
            intervalMs: 100,
            what: () =>
                `the device keys of ${devices.map((d) => d.label).join(", ")} in /keys/query (has ` +
                `${json(Object.fromEntries(userIds.map((u) => [u, Object.keys(res?.device_keys?.[u] ?? {})])))})`,
        },
    );
    for (const d of devices) {
        const own = await d.crypto.getOwnDeviceKeys();
        const got = res.device_keys[d.userId][d.deviceId];
        assert.equal(got.user_id, d.userId, `${d.label}: user_id in /keys/query`);
        assert.equal(got.device_id, d.deviceId, `${d.label}: device_id in /keys/query`);
        assert.equal(got.keys[`ed25519:${d.deviceId}`], own.ed25519, `${d.label}: ed25519 key in /keys/query`);
        assert.equal(got.keys[`curve25519:${d.deviceId}`], own.curve25519, `${d.label}: curve25519 key in /keys/query`);
        assert.ok(got.algorithms?.includes(MEGOLM) && got.algorithms.includes(OLM), `${d.label}: algorithms ${json(got.algorithms)}`);
        assert.equal(
            typeof got.signatures?.[d.userId]?.[`ed25519:${d.deviceId}`],
            "string",
            `${d.label}: the device's self-signature in /keys/query: ${json(got.signatures)}`,
        );
    }
    return res;
}

// ---------------------------------------------------------------------------
// Rooms and messages

/**
 * Creates a private room with m.room.encryption (megolm) in its initial state, owned by `owner`;
 * `others` (one device per other user) are invited and join. Returns once every device in
 * `everyone` has the room, sees all its members joined and treats it as encrypted: a client that
 * did not yet know the room is encrypted would send in the clear.
 */
async function encryptedRoom(owner, others, everyone) {
    const roomId = await createRoom(owner, {
        preset: "private_chat",
        name: `e2ee ${tag()}`,
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
    });
    await inviteAndJoin(roomId, owner, ...others);
    const userIds = [...new Set([owner, ...others].map((d) => d.userId))];
    for (const d of everyone) {
        await until(
            async () => {
                const room = d.client.getRoom(roomId);
                return (
                    room?.getMyMembership() === "join" &&
                    userIds.every((u) => room.getMember(u)?.membership === "join") &&
                    (await d.crypto.isEncryptionEnabledInRoom(roomId))
                );
            },
            { timeoutMs: KEYS_DEADLINE_MS, what: `${d.label} to see the encrypted room with every member joined` },
        );
    }
    return roomId;
}

/**
 * `device` sends a unique secret m.text message; checks that the server holds it as
 * m.room.encrypted (megolm) with no trace of the plaintext. Returns {eventId, body, wire, sender}.
 */
async function sendSecret(device, roomId, what) {
    const body = `e2ee plaintext ${what} ${tag()}${tag()}`;
    plaintexts.push(body);
    const eventId = await sendText(device, roomId, body);
    const wire = await device.client.http.authedRequest(
        Method.Get,
        `/rooms/${enc(roomId)}/event/${enc(eventId)}`,
    );
    assert.equal(wire.type, "m.room.encrypted", `${what}: the server has the event as ${wire.type}: ${json(wire)}`);
    assert.equal(wire.content?.algorithm, MEGOLM, `${what}: ${json(wire.content)}`);
    assert.equal(typeof wire.content.ciphertext, "string", `${what}: no ciphertext: ${json(wire.content)}`);
    assert.equal(typeof wire.content.session_id, "string", `${what}: no session_id: ${json(wire.content)}`);
    assert.ok(!json(wire).includes(body), `${what}: the event the server serves contains the plaintext: ${json(wire)}`);
    return { eventId, body, wire, sender: device };
}

/** What `device` has received through /sync so far of what E2EE needs, for failure messages. */
function e2eeSyncSummary(device) {
    const syncs = device.client.rawLog.filter((r) => r.kind === "sync");
    const toDevice = syncs.flatMap((r) => r.body?.to_device?.events ?? []);
    const changed = [...new Set(syncs.flatMap((r) => r.body?.device_lists?.changed ?? []))];
    const has = (field) => syncs.filter((r) => r.body?.[field] !== undefined).length;
    const last = syncs.at(-1)?.body ?? {};
    return (
        `${device.label} (${device.deviceId}) has had ${syncs.length} /sync responses; ` +
        `${has("to_device")} had to_device, with ${toDevice.length} events ` +
        `${json(toDevice.map((e) => `${e.type} from ${e.sender}`))}; ` +
        `${has("device_lists")} had device_lists (changed: ${json(changed)}); ` +
        `${has("device_one_time_keys_count")} had device_one_time_keys_count (last ${json(last.device_one_time_keys_count)}); ` +
        `${has("device_unused_fallback_key_types")} had device_unused_fallback_key_types (last ` +
        `${json(last.device_unused_fallback_key_types)})`
    );
}

/** Waits until `device` has `msg` decrypted to its plaintext; returns the MatrixEvent. */
async function assertDecrypts(device, roomId, msg, { timeoutMs = DECRYPT_DEADLINE_MS } = {}) {
    const find = () => device.client.getRoom(roomId)?.findEventById(msg.eventId);
    const ev = await until(
        () => {
            const e = find();
            return e && !e.isBeingDecrypted() && e.getType() === "m.room.message" && e.getContent().body === msg.body && e;
        },
        {
            timeoutMs,
            intervalMs: 50,
            what: () => {
                const e = find();
                const state = e
                    ? `it has the event as ${e.getType()}, decryption failure: ${e.isDecryptionFailure()} ` +
                      `(${e.decryptionFailureReason ?? "-"}), content ${json(e.getContent())}`
                    : "it does not have the event";
                return `${device.label} to decrypt "${msg.body}" from ${msg.sender.label}: ${state}. ${e2eeSyncSummary(device)}`;
            },
        },
    );
    assert.equal(ev.getWireType(), "m.room.encrypted");
    assert.ok(ev.isEncrypted(), `${device.label}: the event is not marked encrypted`);
    assert.equal(ev.getSender(), msg.sender.userId);
    assert.equal(ev.getContent().msgtype, "m.text");
    return ev;
}

/**
 * The to-device events `device` received, each with the since of the /sync that brought it.
 * Checks that none came twice: the server deletes a message once the client's next /sync
 * (with a later since) acknowledges it.
 */
function toDeviceEvents(device) {
    const seen = new Map();
    const events = [];
    for (const r of device.client.rawLog.filter((x) => x.kind === "sync")) {
        for (const ev of r.body?.to_device?.events ?? []) {
            const key = json(ev);
            const since = r.query.since ?? "(initial)";
            const before = seen.get(key);
            // The same since again means the SDK retried a /sync: the server may send it again.
            assert.ok(
                before === undefined || before === since,
                `${device.label} got the same to-device event (${ev.type} from ${ev.sender}) in the /sync from ` +
                    `${before} and again in the /sync from ${since}: acknowledged to-device messages must be deleted`,
            );
            if (before === undefined) events.push(ev);
            seen.set(key, since);
        }
    }
    return events;
}

/**
 * Checks the E2EE fields of `device`'s /sync responses: olm-encrypted room keys from each of
 * `senders` addressed to this device's curve25519 key, one-time key counts and the unused fallback
 * key types.
 */
async function assertE2eeSyncFields(device, senders) {
    const own = await device.crypto.getOwnDeviceKeys();
    const events = toDeviceEvents(device);
    for (const s of senders) {
        const senderKey = (await s.crypto.getOwnDeviceKeys()).curve25519;
        const olm = events.filter(
            (e) => e.type === "m.room.encrypted" && e.sender === s.userId && e.content?.sender_key === senderKey,
        );
        assert.ok(
            olm.length > 0,
            `${device.label} got no olm message from ${s.label} (sender_key ${senderKey}) in /sync to_device. ` +
                e2eeSyncSummary(device),
        );
        for (const e of olm) {
            assert.equal(e.content.algorithm, OLM, `${device.label}: olm message from ${s.label}: ${json(e.content)}`);
            assert.ok(
                e.content.ciphertext?.[own.curve25519],
                `${device.label}: an olm message from ${s.label} not encrypted for this device's curve25519 key ` +
                    `${own.curve25519}: ${json(Object.keys(e.content.ciphertext ?? {}))}`,
            );
        }
    }
    const bodies = device.client.rawLog.filter((r) => r.kind === "sync").map((r) => r.body);
    assert.ok(
        bodies.some((b) => b?.device_one_time_keys_count?.signed_curve25519 > 0),
        `${device.label}: no /sync response said the device has signed_curve25519 one-time keys on the server ` +
            `(device_one_time_keys_count). ${e2eeSyncSummary(device)}`,
    );
    const fallback = bodies.at(-1)?.device_unused_fallback_key_types;
    assert.ok(
        Array.isArray(fallback) && fallback.includes("signed_curve25519"),
        `${device.label}: the last /sync must list the unused signed_curve25519 fallback key in ` +
            `device_unused_fallback_key_types, got ${json(fallback)}`,
    );
}

// ---------------------------------------------------------------------------
// User-interactive auth for /keys/device_signing/upload

/**
 * A UIAuthCallback for bootstrapCrossSigning. It first calls without auth; if the server asks
 * for user-interactive auth, it checks the challenge offers [m.login.password], (optionally) that
 * a wrong password is refused with 401 M_FORBIDDEN, then authenticates with the password. `log`
 * receives what happened: "no auth needed", or "challenge", "wrong password refused", "password".
 */
function passwordUia(account, log, { tryWrongPassword = false } = {}) {
    return async (makeRequest) => {
        let challenge;
        try {
            const res = await makeRequest(null);
            log.push("no auth needed");
            return res;
        } catch (err) {
            challenge = assertUiaChallenge(err, ["m.login.password"], "POST /keys/device_signing/upload");
            log.push("challenge");
        }
        let session = challenge.session;
        if (tryWrongPassword) {
            const err = await expectMatrixError(
                () => makeRequest(passwordAuth(account.username, `${account.password}-wrong`, session)),
                { status: 401, errcode: "M_FORBIDDEN" },
                "POST /keys/device_signing/upload with a wrong password",
            );
            session = err.data?.session ?? session;
            log.push("wrong password refused");
        }
        const res = await makeRequest(passwordAuth(account.username, account.password, session));
        log.push("password");
        return res;
    };
}

// ---------------------------------------------------------------------------
// The server's database (test e)

const DATA_DIR = process.env.HS_E2E_DATA_DIR || "";
const PG_DSN = process.env.HS_E2E_PG_DSN || "";
const SQLITE_DB = DATA_DIR && !PG_DSN ? join(DATA_DIR, "homeserver.db") : "";
const execFileP = promisify(execFile);

async function run(cmd, args) {
    try {
        const { stdout } = await execFileP(cmd, args, { maxBuffer: 1 << 30, encoding: "utf8" });
        return stdout;
    } catch (err) {
        throw new Error(`${cmd} ${args.map((a) => json(a)).join(" ")} failed: ${err.stderr || err.message}`);
    }
}

const sqlString = (s) => `'${String(s).replaceAll("'", "''")}'`;
const psql = (sql) => run("psql", [PG_DSN, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);

/** The rows of the events table for `roomId`: [{event_id, type, pdu, client_json}]. */
async function storedEvents(roomId) {
    const q = `SELECT event_id, type, pdu, client_json FROM events WHERE room_id = ${sqlString(roomId)}`;
    if (PG_DSN) return JSON.parse(await psql(`SELECT coalesce(json_agg(t), '[]'::json) FROM (${q}) t`));
    const out = await run("sqlite3", ["-json", SQLITE_DB, q]);
    return out.trim() ? JSON.parse(out) : [];
}

/**
 * Every row of every table as text, one line per row naming its table (SQLite: the CLI's .dump,
 * INSERT statements; PostgreSQL: "schema.table: (row as text)").
 */
async function databaseText() {
    if (!PG_DSN) return run("sqlite3", [SQLITE_DB, ".dump"]);
    const tables = (
        await psql(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables " +
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
    )
        .split("\n")
        .filter(Boolean);
    assert.ok(tables.length > 0, "psql found no tables");
    return psql(tables.map((t) => `SELECT ${sqlString(t + ": ")} || replace(x::text, E'\\n', ' ') FROM ${t} x`).join(" UNION ALL "));
}

/** The files below `dir` (recursively) whose bytes contain one of `needles`: [{file, needle}]. */
async function filesContaining(dir, needles) {
    const found = [];
    for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
        if (!entry.isFile()) continue;
        const file = join(entry.parentPath ?? entry.path, entry.name);
        let bytes;
        try {
            bytes = await readFile(file);
        } catch {
            continue; // removed meanwhile (a WAL checkpoint, a NATS segment)
        }
        for (const needle of needles) if (bytes.includes(needle)) found.push({ file, needle });
    }
    return found;
}

// ---------------------------------------------------------------------------
// (a) four devices

test("megolm: alice and bob with two devices each; each device's message decrypts on the other three", opts, async () => {
    const alice = await registerUser({ prefix: "e2ee-alice", deviceName: "alice 1" });
    const alice2 = await loginDevice(alice, { deviceName: "alice 2" });
    const bob = await registerUser({ prefix: "e2ee-bob", deviceName: "bob 1" });
    const bob2 = await loginDevice(bob, { deviceName: "bob 2" });
    const devices = [
        await startDevice(alice, "alice 1"),
        await startDevice(alice2, "alice 2"),
        await startDevice(bob, "bob 1"),
        await startDevice(bob2, "bob 2"),
    ];
    await assertKeysPublished(bob, devices);
    const roomId = await encryptedRoom(alice, [bob], devices);

    const sent = [];
    for (const sender of devices) {
        const msg = await sendSecret(sender, roomId, `from ${sender.label}`);
        sent.push(msg);
        await Promise.all(devices.filter((d) => d !== sender).map((d) => assertDecrypts(d, roomId, msg)));
    }
    // Every device got room keys by olm from each of the other three, and the key counts.
    for (const d of devices) {
        await assertE2eeSyncFields(
            d,
            devices.filter((s) => s !== d),
        );
    }
    // One megolm session per sending device.
    assert.equal(new Set(sent.map((m) => m.wire.content.session_id)).size, 4, "each device uses its own megolm session");
});

// ---------------------------------------------------------------------------
// (b) a device that appears later

test("new device: bob's device logged in later decrypts what is sent after it appeared", opts, async () => {
    const alice = await registerUser({ prefix: "e2ee-new-alice", deviceName: "alice 1" });
    const bob = await registerUser({ prefix: "e2ee-new-bob", deviceName: "bob 1" });
    await startDevice(alice, "alice 1");
    await startDevice(bob, "bob 1");
    await assertKeysPublished(alice, [alice, bob]);
    const roomId = await encryptedRoom(alice, [bob], [alice, bob]);

    // Both track each other's devices from here on.
    await assertDecrypts(bob, roomId, await sendSecret(alice, roomId, "before bob 2"));
    await assertDecrypts(alice, roomId, await sendSecret(bob, roomId, "from bob 1 before bob 2"));

    const loginAt = Date.now();
    const bob2 = await loginDevice(bob, { deviceName: "bob 2" });
    await startDevice(bob2, "bob 2");
    await assertKeysPublished(alice, [bob2]);

    // Alice's client learns of the new device only through device_lists.changed in her /sync.
    await until(
        async () => (await alice.crypto.getUserDeviceInfo([bob.userId])).get(bob.userId)?.has(bob2.deviceId),
        {
            timeoutMs: KEYS_DEADLINE_MS,
            intervalMs: 100,
            what: () => `alice's client to learn of bob's new device ${bob2.deviceId}. ${e2eeSyncSummary(alice)}`,
        },
    );
    const changedAfterLogin = alice.client.rawLog.filter(
        (r) => r.kind === "sync" && r.at >= loginAt && r.body?.device_lists?.changed?.includes(bob.userId),
    );
    assert.ok(
        changedAfterLogin.length > 0,
        `bob logged in a new device: alice's /sync must list him in device_lists.changed. ${e2eeSyncSummary(alice)}`,
    );

    const after = await sendSecret(alice, roomId, "after bob 2");
    await assertDecrypts(bob2, roomId, after);
    await assertDecrypts(bob, roomId, after);
    const fromNew = await sendSecret(bob2, roomId, "from bob 2");
    await assertDecrypts(alice, roomId, fromNew);
    await assertDecrypts(bob, roomId, fromNew);
    await assertE2eeSyncFields(bob2, [alice]);
});

/** Waits until a /sync response of `device` names `userId` in device_lists[`list`]; returns it. */
function deviceListEntry(device, list, userId, since, why) {
    return until(
        () =>
            device.client.rawLog.find(
                (r) => r.kind === "sync" && r.at >= since && r.body?.device_lists?.[list]?.includes(userId),
            ),
        {
            timeoutMs: KEYS_DEADLINE_MS,
            what: () => `${userId} in device_lists.${list} of ${device.label}'s /sync (${why}). ${e2eeSyncSummary(device)}`,
        },
    );
}

test("device lists: a user is in device_lists.changed once he shares an encrypted room, in left once he shares none", opts, async () => {
    const alice = await registerUser({ prefix: "e2ee-dl-alice", deviceName: "alice 1" });
    const bob = await registerUser({ prefix: "e2ee-dl-bob", deviceName: "bob 1" });
    await startDevice(alice, "alice 1");
    await startDevice(bob, "bob 1");
    await assertKeysPublished(alice, [alice, bob]);

    // Bob uploaded his keys while they shared no room: none of that reaches alice.
    const joinAt = Date.now();
    const early = alice.client.rawLog.filter((r) => r.kind === "sync" && r.body?.device_lists?.changed?.includes(bob.userId));
    assert.deepEqual(early.map((r) => r.query.since), [], "alice's /sync named bob in device_lists.changed before they shared a room");
    const roomId = await encryptedRoom(alice, [bob], [alice, bob]);
    await deviceListEntry(alice, "changed", bob.userId, joinAt, "bob joined alice's encrypted room");
    await deviceListEntry(bob, "changed", alice.userId, joinAt, "bob joined a room with alice");
    await assertDecrypts(bob, roomId, await sendSecret(alice, roomId, "while bob shares the room"));

    const leaveAt = Date.now();
    await bob.client.leave(roomId);
    await deviceListEntry(alice, "left", bob.userId, leaveAt, "bob left the only room he shared with alice");
    await deviceListEntry(bob, "left", alice.userId, leaveAt, "bob left the only room he shared with alice");
    const sinceLeave = alice.client.rawLog.filter((r) => r.kind === "sync" && r.at >= leaveAt);
    assert.ok(
        !sinceLeave.some((r) => r.body?.device_lists?.changed?.includes(bob.userId) && r.body.device_lists.left?.includes(bob.userId)),
        "one /sync response named bob in both device_lists.changed and left",
    );
});

// ---------------------------------------------------------------------------
// (c) cross-signing and verification

test("cross-signing: bootstrap for both users, password UIA to replace keys, alice cross-signs her second device, bob verifies alice by SAS", opts, async (t) => {
    const alice = await registerUser({ prefix: "e2ee-xs-alice", deviceName: "alice 1" });
    const alice2 = await loginDevice(alice, { deviceName: "alice 2" });
    const bob = await registerUser({ prefix: "e2ee-xs-bob", deviceName: "bob 1" });
    // Alice 1 does not sync until her keys are final: matrix-sdk-crypto drops freshly reset private
    // keys when it processes a /keys/query answered before their upload (still the old master key),
    // which a syncing client sends whenever device_lists.changed names its own user.
    await startDevice(alice, "alice 1", { sync: false });
    await startDevice(alice2, "alice 2");
    await startDevice(bob, "bob 1");

    // 1. Alice bootstraps cross-signing; replacing the keys afterwards needs her password.
    const firstUpload = [];
    await alice.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(alice, firstUpload) });
    t.diagnostic(`alice's first cross-signing upload: ${firstUpload.join(", ")}`);
    const firstMaster = await alice.crypto.getCrossSigningKeyId(CrossSigningKey.Master);
    const replaceUpload = [];
    await alice.crypto.bootstrapCrossSigning({
        setupNewCrossSigning: true,
        authUploadDeviceSigningKeys: passwordUia(alice, replaceUpload, { tryWrongPassword: true }),
    });
    assert.deepEqual(
        replaceUpload,
        ["challenge", "wrong password refused", "password"],
        "replacing existing cross-signing keys must need user-interactive auth (the password)",
    );
    await startSyncing(alice.client);
    const bobUpload = [];
    await bob.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(bob, bobUpload) });

    const masterOf = {};
    for (const d of [alice, bob]) {
        assert.equal(await d.crypto.isCrossSigningReady(), true, `${d.label}: isCrossSigningReady`);
        const status = await d.crypto.getCrossSigningStatus();
        assert.equal(status.publicKeysOnDevice, true, `${d.label}: ${json(status)}`);
        assert.deepEqual(
            status.privateKeysCachedLocally,
            { masterKey: true, selfSigningKey: true, userSigningKey: true },
            `${d.label}: ${json(status)}`,
        );
        masterOf[d.userId] = await d.crypto.getCrossSigningKeyId(CrossSigningKey.Master);
    }
    assert.notEqual(masterOf[alice.userId], firstMaster, "the reset must have made a new master key");

    // 2. What the server serves: the new master and self-signing keys to everyone, the user-signing
    // key only to its owner, alice's first device signed by her self-signing key.
    const asBob = await keysQuery(bob, [alice.userId]);
    const asAlice = await keysQuery(alice, [alice.userId]);
    const keyIdsOf = (k) => Object.keys(k?.keys ?? {});
    assert.deepEqual(
        keyIdsOf(asBob.master_keys?.[alice.userId]),
        [`ed25519:${masterOf[alice.userId]}`],
        `alice's master key as bob sees it: ${json(asBob.master_keys)}`,
    );
    assert.deepEqual(asBob.master_keys[alice.userId].usage, ["master"]);
    const sskId = keyIdsOf(asBob.self_signing_keys?.[alice.userId])[0];
    assert.ok(sskId?.startsWith("ed25519:"), `alice's self-signing key as bob sees it: ${json(asBob.self_signing_keys)}`);
    assert.equal(
        asBob.user_signing_keys?.[alice.userId],
        undefined,
        "alice's user-signing key must be served only to alice",
    );
    assert.ok(asAlice.user_signing_keys?.[alice.userId], `alice's own query must have her user-signing key: ${json(asAlice)}`);
    assert.ok(
        asAlice.device_keys[alice.userId][alice.deviceId].signatures?.[alice.userId]?.[sskId],
        `alice 1's device keys must carry the self-signing key's signature: ` +
            json(asAlice.device_keys[alice.userId][alice.deviceId].signatures),
    );

    // 3. Alice (device 1) cross-signs her second device: its status changes on alice 1, and bob's
    // client sees the device signed by its owner (both learn through device_lists.changed).
    const roomId = await encryptedRoom(alice, [bob], [alice, alice2, bob]);
    await until(async () => (await alice.crypto.getUserDeviceInfo([alice.userId])).get(alice.userId)?.has(alice2.deviceId), {
        timeoutMs: KEYS_DEADLINE_MS,
        intervalMs: 100,
        what: () => `alice 1 to learn of alice 2 (it needs alice in device_lists.changed). ${e2eeSyncSummary(alice)}`,
    });
    const before = await alice.crypto.getDeviceVerificationStatus(alice.userId, alice2.deviceId);
    assert.equal(before?.crossSigningVerified, false, `alice 2 before cross-signing: ${json(before)}`);
    const own = await alice.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId);
    assert.equal(own?.crossSigningVerified, true, `alice 1 (signed by the bootstrap): ${json(own)}`);

    await alice.crypto.crossSignDevice(alice2.deviceId);
    await until(
        async () => (await keysQuery(bob, [alice.userId])).device_keys?.[alice.userId]?.[alice2.deviceId]?.signatures?.[alice.userId]?.[sskId],
        { timeoutMs: KEYS_DEADLINE_MS, what: "the self-signing key's signature on alice 2 in /keys/query" },
    );
    await until(async () => (await alice.crypto.getDeviceVerificationStatus(alice.userId, alice2.deviceId))?.crossSigningVerified, {
        timeoutMs: KEYS_DEADLINE_MS,
        intervalMs: 100,
        what: () => `alice 1 to see alice 2 cross-signing verified. ${e2eeSyncSummary(alice)}`,
    });
    await until(async () => (await bob.crypto.getDeviceVerificationStatus(alice.userId, alice2.deviceId))?.signedByOwner, {
        timeoutMs: KEYS_DEADLINE_MS,
        intervalMs: 100,
        what: () => `bob to see alice 2 signed by alice. ${e2eeSyncSummary(bob)}`,
    });
    const unverified = await bob.crypto.getUserVerificationStatus(alice.userId);
    assert.equal(unverified.isCrossSigningVerified(), false, "bob has not verified alice yet");

    // 4. Bob verifies alice (device 1) by SAS over to-device messages.
    const incoming = new Promise((resolve) => alice.client.once(CryptoEvent.VerificationRequestReceived, resolve));
    const bobRequest = await bob.crypto.requestDeviceVerification(alice.userId, alice.deviceId);
    const aliceRequest = await within(incoming, "alice 1 to receive bob's m.key.verification.request", alice);
    assert.equal(aliceRequest.otherUserId, bob.userId);
    await aliceRequest.accept();
    await until(() => bobRequest.phase === VerificationPhase.Ready, {
        timeoutMs: KEYS_DEADLINE_MS,
        what: () => `bob's request to be ready (phase ${bobRequest.phase}). ${e2eeSyncSummary(bob)}`,
    });
    const bobVerifier = await bobRequest.startVerification("m.sas.v1");
    const aliceVerifier = await until(() => aliceRequest.verifier, {
        timeoutMs: KEYS_DEADLINE_MS,
        what: () => `alice's side of the SAS to start (phase ${aliceRequest.phase}). ${e2eeSyncSummary(alice)}`,
    });
    const bobSas = new Promise((resolve) => bobVerifier.once(VerifierEvent.ShowSas, resolve));
    const aliceSas = new Promise((resolve) => aliceVerifier.once(VerifierEvent.ShowSas, resolve));
    const bobDone = bobVerifier.verify();
    const aliceDone = aliceVerifier.verify();
    const [bs, as] = await within(Promise.all([bobSas, aliceSas]), "both sides to show the SAS", bob);
    assert.ok(bs.sas.emoji?.length === 7, `bob's SAS: ${json(bs.sas)}`);
    assert.deepEqual(bs.sas.emoji, as.sas.emoji, "both sides must show the same emoji");
    await Promise.all([bs.confirm(), as.confirm()]);
    await within(Promise.all([bobDone, aliceDone]), "the verification to finish (m.key.verification.mac / done)", bob);
    await until(() => bobRequest.phase === VerificationPhase.Done && aliceRequest.phase === VerificationPhase.Done, {
        timeoutMs: KEYS_DEADLINE_MS,
        what: () => `both requests done (bob ${bobRequest.phase}, alice ${aliceRequest.phase})`,
    });

    // 5. Bob now verifies alice's identity, and so her cross-signed second device; alice bob's.
    await until(async () => (await bob.crypto.getUserVerificationStatus(alice.userId)).isCrossSigningVerified(), {
        timeoutMs: KEYS_DEADLINE_MS,
        what: "bob to have alice cross-signing verified",
    });
    await until(async () => (await alice.crypto.getUserVerificationStatus(bob.userId)).isCrossSigningVerified(), {
        timeoutMs: KEYS_DEADLINE_MS,
        what: "alice to have bob cross-signing verified",
    });
    const a2AtBob = await bob.crypto.getDeviceVerificationStatus(alice.userId, alice2.deviceId);
    assert.equal(a2AtBob?.crossSigningVerified, true, `alice 2 at bob once bob verified alice: ${json(a2AtBob)}`);
    // Bob's user-signing key signed alice's master key, and the server hands that signature to bob.
    const bobUsk = await bob.crypto.getCrossSigningKeyId(CrossSigningKey.UserSigning);
    await until(
        async () => (await keysQuery(bob, [alice.userId])).master_keys?.[alice.userId]?.signatures?.[bob.userId]?.[`ed25519:${bobUsk}`],
        { timeoutMs: KEYS_DEADLINE_MS, what: "bob's signature on alice's master key in bob's /keys/query" },
    );

    // Messages still flow, now between verified devices.
    const msg = await sendSecret(alice2, roomId, "from verified alice 2");
    await assertDecrypts(bob, roomId, msg);
});

/** Awaits `promise`, failing after KEYS_DEADLINE_MS with `what` and what `device` got by /sync. */
async function within(promise, what, device) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(
            () => reject(new Error(`timed out after ${KEYS_DEADLINE_MS} ms waiting for ${what}. ${e2eeSyncSummary(device)}`)),
            KEYS_DEADLINE_MS,
        );
    });
    try {
        return await Promise.race([promise, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

// ---------------------------------------------------------------------------
// (d) key backup

test("key backup: a new device restores alice's room keys from the backup and decrypts an old message", opts, async (t) => {
    const alice = await registerUser({ prefix: "e2ee-backup-alice", deviceName: "alice 1" });
    const bob = await registerUser({ prefix: "e2ee-backup-bob", deviceName: "bob 1" });
    // The secret storage key, as a user would type in the recovery key on each device.
    let recoveryKey;
    const cryptoCallbacks = {
        getSecretStorageKey: async ({ keys }) => {
            const keyId = Object.keys(keys)[0];
            return recoveryKey && keyId ? [keyId, recoveryKey.privateKey] : null;
        },
    };
    await startDevice(alice, "alice 1", { cryptoCallbacks });
    await startDevice(bob, "bob 1");

    // 1. Cross-signing, secret storage and a new backup version, as a client's "set up recovery".
    await alice.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(alice, []) });
    recoveryKey = await alice.crypto.createRecoveryKeyFromPassphrase();
    await alice.crypto.bootstrapSecretStorage({
        createSecretStorageKey: async () => recoveryKey,
        setupNewSecretStorage: true,
        setupNewKeyBackup: true,
    });
    assert.equal(await alice.crypto.isSecretStorageReady(), true, "alice 1: isSecretStorageReady");
    const version = await until(() => alice.crypto.getActiveSessionBackupVersion(), {
        timeoutMs: KEYS_DEADLINE_MS,
        what: "alice 1 to back up to the new backup version",
    });
    const info = await alice.client.http.authedRequest(Method.Get, "/room_keys/version");
    assert.equal(info.version, version, `GET /room_keys/version: ${json(info)}`);
    assert.equal(info.algorithm, BACKUP_ALGORITHM, `GET /room_keys/version: ${json(info)}`);
    assert.equal(typeof info.auth_data?.public_key, "string", `GET /room_keys/version: ${json(info)}`);

    // 2. A message bob decrypts (so it is properly encrypted), then backed up by alice 1.
    const roomId = await encryptedRoom(alice, [bob], [alice, bob]);
    const old = await sendSecret(alice, roomId, "backed up");
    await assertDecrypts(bob, roomId, old);
    const sessionId = old.wire.content.session_id;
    const backedUp = await until(
        async () => {
            const res = await alice.client.http
                .authedRequest(Method.Get, `/room_keys/keys/${enc(roomId)}`, { version })
                .catch((err) => (err instanceof MatrixError && err.httpStatus === 404 ? null : Promise.reject(err)));
            return res?.sessions?.[sessionId];
        },
        { timeoutMs: BACKUP_DEADLINE_MS, intervalMs: 200, what: `alice 1 to back up megolm session ${sessionId}` },
    );
    assert.equal(typeof backedUp.first_message_index, "number", `backed-up session: ${json(backedUp)}`);
    assert.equal(typeof backedUp.is_verified, "boolean", `backed-up session: ${json(backedUp)}`);
    for (const f of ["ciphertext", "ephemeral", "mac"]) {
        assert.equal(typeof backedUp.session_data?.[f], "string", `backed-up session_data.${f}: ${json(backedUp)}`);
    }
    const info2 = await alice.client.http.authedRequest(Method.Get, "/room_keys/version");
    assert.ok(info2.count >= 1, `GET /room_keys/version count after the upload: ${json(info2)}`);
    assert.notEqual(info2.etag, info.etag, "the backup's etag must change when keys are added");

    // 3. Every client stops: nobody is left who could send the new device the key by to-device.
    stopAllClients();
    const alice3 = await loginDevice(alice, { deviceName: "alice 3" });
    await startDevice(alice3, "alice 3 (new)", { cryptoCallbacks });
    const undecryptable = await until(
        () => {
            const ev = alice3.client.getRoom(roomId)?.findEventById(old.eventId);
            return ev && !ev.isBeingDecrypted() && (ev.isDecryptionFailure() || ev.getType() === "m.room.message") && ev;
        },
        { timeoutMs: KEYS_DEADLINE_MS, what: "the old message in alice 3's timeline" },
    );
    assert.equal(
        undecryptable.isDecryptionFailure(),
        true,
        `alice 3 must not be able to decrypt the old message before restoring the backup: ${json(undecryptable.getContent())}`,
    );

    // 4. The backup key from secret storage, then the restore.
    await alice3.crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    const result = await alice3.crypto.restoreKeyBackup();
    t.diagnostic(`restoreKeyBackup: ${json(result)}`);
    assert.ok(result.total >= 1 && result.imported >= 1, `restoreKeyBackup: ${json(result)}`);
    await assertDecrypts(alice3, roomId, old);
});

// ---------------------------------------------------------------------------
// (e) at rest

test("at rest: the server stores encrypted messages as ciphertext only, never a plaintext body", opts, async (t) => {
    const alice = await registerUser({ prefix: "e2ee-rest-alice", deviceName: "alice 1" });
    const bob = await registerUser({ prefix: "e2ee-rest-bob", deviceName: "bob 1" });
    await startDevice(alice, "alice 1");
    await startDevice(bob, "bob 1");
    const roomId = await encryptedRoom(alice, [bob], [alice, bob]);
    const sent = [];
    for (const [from, to] of [
        [alice, bob],
        [bob, alice],
        [alice, bob],
    ]) {
        const msg = await sendSecret(from, roomId, `at rest from ${from.label}`);
        await assertDecrypts(to, roomId, msg);
        sent.push(msg);
    }

    // What the client-server API serves: the room's history holds m.room.encrypted only.
    const page = await bob.client.createMessagesRequest(roomId, null, 100, sdk.Direction.Backward);
    const messages = page.chunk.filter((e) => sent.some((m) => m.eventId === e.event_id));
    assert.equal(messages.length, sent.length, "/messages must hold the messages sent");
    assert.ok(messages.every((e) => e.type === "m.room.encrypted"), `types in /messages: ${json(messages.map((e) => e.type))}`);
    const leakedApi = plaintexts.filter((p) => json(page).includes(p));
    assert.deepEqual(leakedApi, [], "/messages must not contain any plaintext");

    if (!SQLITE_DB && !PG_DSN) {
        t.skip("HS_E2E_DATA_DIR / HS_E2E_PG_DSN not set: the database was not read (scripts/test.sh sets them)");
        return;
    }
    t.diagnostic(`reading ${PG_DSN ? "PostgreSQL" : SQLITE_DB}; checking ${plaintexts.length} plaintexts sent by this file`);

    // The events table: each message stored as m.room.encrypted, with the ciphertext the API serves
    // (so the query reads what is really stored) and no plaintext in any row of the room.
    const rows = await storedEvents(roomId);
    for (const m of sent) {
        const row = rows.find((r) => r.event_id === m.eventId);
        assert.ok(row, `no row for ${m.eventId} in the events table (${rows.length} rows for the room)`);
        assert.equal(row.type, "m.room.encrypted", `the stored type of ${m.eventId}`);
        assert.ok(row.pdu.includes(m.wire.content.ciphertext), `events.pdu of ${m.eventId} lacks the ciphertext`);
        assert.ok(row.client_json.includes(m.wire.content.ciphertext), `events.client_json of ${m.eventId} lacks the ciphertext`);
    }
    for (const r of rows) {
        for (const p of plaintexts) {
            assert.ok(!json(r).includes(p), `events row ${r.event_id} (${r.type}) contains the plaintext "${p}"`);
        }
    }

    // Every table: no plaintext sent by this file anywhere (the ciphertexts are there).
    const dump = await databaseText();
    for (const m of sent) assert.ok(dump.includes(m.wire.content.ciphertext), `the database dump lacks the ciphertext of ${m.eventId}`);
    const leakedDb = plaintexts.flatMap((p) =>
        dump
            .split("\n")
            .filter((line) => line.includes(p))
            .map((line) => {
                const at = line.indexOf(p);
                return `"${p}" in: ${line.slice(0, 160)} ... ${line.slice(Math.max(0, at - 80), at + p.length + 20)}`;
            }),
    );
    assert.deepEqual(leakedDb, [], "the database must not contain any plaintext body");

    // The data directory's files (SQLite files and WAL, the NATS store, ...).
    if (DATA_DIR) {
        const inFiles = await filesContaining(
            DATA_DIR,
            plaintexts.map((p) => Buffer.from(p)),
        );
        assert.deepEqual(
            inFiles.map((f) => `${f.file}: "${f.needle}"`),
            [],
            "no file in the data directory may contain a plaintext body",
        );
    }
});
