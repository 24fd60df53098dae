// An encrypted room shared by two of our servers (issue 7): alice on the first server, bob on the
// second, each with matrix-js-sdk and its Rust crypto. Room keys travel as Olm-encrypted
// to-device messages over federation (m.direct_to_device), device keys through
// /user/keys/query and /user/keys/claim, and each side decrypts the other's Megolm messages.
//
// scripts/test.sh runs this file against two servers on 127.0.0.1 and 127.0.0.2 federating over
// TLS with certificates from a throwaway CA (homeserver generate-ca):
//   HS_E2E_BASE_URL, HS_E2E_SERVER_NAME      the first server
//   HS_E2E_BASE_URL_2, HS_E2E_SERVER_NAME_2  the second server

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
    SERVER_NAME,
    TEST_TIMEOUT_MS,
    createRoom,
    immediateScheduler,
    initCrypto,
    json,
    registerUser,
    requireServer,
    sendText,
    startSyncing,
    stopAllClients,
    syncClient,
    tag,
    until,
} from "../helpers.mjs";

const BASE_URL_2 = (process.env.HS_E2E_BASE_URL_2 || "").replace(/\/+$/, "");
const SERVER_NAME_2 = process.env.HS_E2E_SERVER_NAME_2 || "";
const MEGOLM = "m.megolm.v1.aes-sha2";
const DEADLINE_MS = 30_000;

await requireServer();
afterEach(stopAllClients);

/** Registers a user on the server at baseUrl (undefined: the first) and starts a syncing crypto client. */
async function cryptoUser(prefix, baseUrl) {
    const user = await registerUser({ prefix, ...(baseUrl ? { baseUrl } : {}) });
    user.client = syncClient(user, { scheduler: immediateScheduler() });
    user.crypto = await initCrypto(user.client);
    await startSyncing(user.client);
    return user;
}

/** Waits until `user` has event `eventId` of roomId decrypted; returns its content. */
async function decrypted(user, roomId, eventId) {
    let ev;
    await until(
        () => {
            // A key that arrives after its message (the to-device and the room event travel in
            // different transactions) makes the SDK decrypt again: wait for success, not for the
            // first attempt.
            ev = user.client.getRoom(roomId)?.findEventById(eventId);
            return ev && !ev.isBeingDecrypted() && !ev.isDecryptionFailure() && ev.getType() === "m.room.message";
        },
        {
            timeoutMs: DEADLINE_MS,
            intervalMs: 50,
            what: () =>
                `${user.userId} to decrypt ${eventId}: ` +
                (ev ? `has it as ${ev.getType()}, failure ${ev.decryptionFailureReason ?? "-"}` : "does not have it"),
        },
    );
    assert.equal(ev.getWireType(), "m.room.encrypted");
    assert.ok(ev.isEncrypted());
    return ev.getContent();
}

test("an encrypted room across two servers: each side decrypts the other", { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!BASE_URL_2 || !SERVER_NAME_2) {
        t.skip("HS_E2E_BASE_URL_2 and HS_E2E_SERVER_NAME_2 are not set (scripts/test.sh sets them)");
        return;
    }
    const alice = await cryptoUser("fed-alice");
    const bob = await cryptoUser("fed-bob", BASE_URL_2);
    assert.ok(alice.userId.endsWith(`:${SERVER_NAME}`), alice.userId);
    assert.ok(bob.userId.endsWith(`:${SERVER_NAME_2}`), bob.userId);

    const roomId = await createRoom(alice, {
        preset: "private_chat",
        name: `federated e2ee ${tag()}`,
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
    });
    await alice.client.invite(roomId, bob.userId);
    await until(() => bob.client.getRoom(roomId)?.getMyMembership() === "invite", {
        timeoutMs: DEADLINE_MS,
        what: `${bob.userId} to be invited over federation`,
    });
    await bob.client.joinRoom(roomId, { viaServers: [SERVER_NAME] });
    for (const u of [alice, bob]) {
        let seen = {};
        await until(
            async () => {
                const room = u.client.getRoom(roomId);
                seen = {
                    alice: room?.getMember(alice.userId)?.membership,
                    bob: room?.getMember(bob.userId)?.membership,
                    encrypted: await u.crypto.isEncryptionEnabledInRoom(roomId),
                };
                return seen.alice === "join" && seen.bob === "join" && seen.encrypted;
            },
            {
                timeoutMs: DEADLINE_MS,
                what: () => `${u.userId} to see both members joined in the encrypted room (sees ${json(seen)})`,
            },
        );
    }

    // Each side knows the other's device keys (through /user/keys/query over federation).
    for (const [me, other] of [
        [alice, bob],
        [bob, alice],
    ]) {
        await until(
            async () => {
                const devices = await me.crypto.getUserDeviceInfo([other.userId], true);
                return devices.get(other.userId)?.has(other.deviceId);
            },
            { timeoutMs: DEADLINE_MS, what: `${me.userId} to know the device of ${other.userId}` },
        );
    }

    const hello = `hello from ${SERVER_NAME} ${tag()}`;
    const helloId = await sendText(alice, roomId, hello);
    const wire = await alice.client.fetchRoomEvent(roomId, helloId);
    assert.equal(wire.type, "m.room.encrypted", `the server holds ${json(wire)}`);
    assert.ok(!json(wire).includes(hello), "the server holds the plaintext");
    assert.equal((await decrypted(bob, roomId, helloId)).body, hello);

    const reply = `hello back from ${SERVER_NAME_2} ${tag()}`;
    const replyId = await sendText(bob, roomId, reply);
    assert.equal((await decrypted(alice, roomId, replyId)).body, reply);
});
