// Live signals through matrix-js-sdk's sync loop (issue 4): typing that expires by itself, read
// receipts and private read receipts, presence going online then offline with last_active_ago,
// an offline device that resumes from its token, and delivery receipts (dev.hearth.delivered,
// docs/sync.md).
//
// Run: HS_E2E_BASE_URL=http://127.0.0.1:18008 HS_E2E_SERVER_NAME=localhost \
//      HS_E2E_PRESENCE_IDLE_TIMEOUT=2s HS_E2E_PRESENCE_OFFLINE_TIMEOUT=3s \
//      node --test --test-force-exit --test-concurrency=1 signals.test.mjs
//
// The presence test waits for the server's presence.offline_timeout. HS_E2E_PRESENCE_IDLE_TIMEOUT
// and HS_E2E_PRESENCE_OFFLINE_TIMEOUT must name the server's presence.idle_timeout and
// presence.offline_timeout (Go durations such as 2s, 1500ms); unset, the config defaults (5m, 30s)
// are assumed. scripts/test.sh starts its servers with 2s / 3s and passes the same values here.
//
// As in sync.test.mjs, the syncing clients (syncClient, helpers.mjs) record the raw /sync responses they receive, since the
// SDK hides some of what the server sends (a duplicated event, receipt types it does not support
// such as dev.hearth.delivered, or where a receipt came from: it echoes the receipts its own user
// sends locally).
//
// Every test registers its own users (unique names); afterEach stops every client.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
    Method,
    startPersisted,
    TEST_TIMEOUT_MS,
    assertSameSequence,
    collectLive,
    createRoom,
    inviteAndJoin,
    json,
    liveMessages,
    newUser,
    requireServer,
    sdk,
    sendMany,
    sendText,
    sleep,
    startSyncing,
    stopAllClients,
    syncClient,
    tag,
    until,
} from "./helpers.mjs";

await requireServer();

afterEach(() => stopAllClients());

const opts = { timeout: TEST_TIMEOUT_MS };

const { RoomMemberEvent, UserEvent } = sdk;
const { ReceiptType } = sdk;
const DELIVERED = "dev.hearth.delivered";
const DELIVERY_OPT_IN = "dev.hearth.delivery_receipts";

/** Milliseconds of a Go duration string such as "3s", "1500ms", "1m30s", "5m0s". */
function goDurationMs(text, fallbackMs, name) {
    if (text === undefined || text === "") return fallbackMs;
    const units = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
    const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
    let total = 0;
    let end = 0;
    for (let m; (m = re.exec(text)); end = re.lastIndex) total += Number(m[1]) * units[m[2]];
    if (end !== text.length || end === 0) throw new Error(`${name}=${json(text)} is not a duration like 3s or 1500ms`);
    return total;
}

const PRESENCE_IDLE_MS = goDurationMs(process.env.HS_E2E_PRESENCE_IDLE_TIMEOUT, 300_000, "HS_E2E_PRESENCE_IDLE_TIMEOUT");
const PRESENCE_OFFLINE_MS = goDurationMs(
    process.env.HS_E2E_PRESENCE_OFFLINE_TIMEOUT,
    30_000,
    "HS_E2E_PRESENCE_OFFLINE_TIMEOUT",
);

// ---------------------------------------------------------------------------
// Raw /sync responses (the syncing clients record theirs: syncClient in helpers.mjs)

/** GET /sync through a client's http API (timeout 0 unless given). */
function rawSync(user, query = {}) {
    return user.client.http.authedRequest(Method.Get, "/sync", { timeout: "0", ...query }, undefined);
}

/** The ephemeral events of `type` for `roomId` in one /sync body. */
function ephemeralOf(body, roomId, type) {
    return (body?.rooms?.join?.[roomId]?.ephemeral?.events ?? []).filter((e) => e.type === type);
}

/**
 * Receipts for `roomId` in /sync bodies, flattened: [{eventId, type, userId, ts, thread_id, index}]
 * (index: which body). Checks the m.receipt shape on the way.
 */
function receiptsIn(bodies, roomId) {
    const out = [];
    bodies.forEach((body, index) => {
        for (const ev of ephemeralOf(body, roomId, "m.receipt")) {
            assert.equal(typeof ev.content, "object", `m.receipt without content: ${json(ev)}`);
            for (const [eventId, byType] of Object.entries(ev.content)) {
                for (const [type, byUser] of Object.entries(byType ?? {})) {
                    for (const [userId, data] of Object.entries(byUser ?? {})) {
                        out.push({ eventId, type, userId, ts: data?.ts, thread_id: data?.thread_id, index });
                    }
                }
            }
        }
    });
    return out;
}

const bodiesOf = (client) => client.rawLog.map((r) => r.body);

// ---------------------------------------------------------------------------
// Typing

test("typing: bob sees alice typing, and the server's expiry after 2 s without typing:false", opts, async (t) => {
    const alice = await newUser("typ-alice");
    const bob = await newUser("typ-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob);
    const bobSync = syncClient(bob);
    const seen = [];
    bobSync.on(RoomMemberEvent.Typing, (_ev, member) => {
        if (member.roomId === roomId && member.userId === alice.userId) seen.push({ typing: member.typing, at: Date.now() });
    });
    await startSyncing(bobSync);

    const TYPING_TIMEOUT_MS = 2_000;
    const EXPIRY_DEADLINE_MS = 6_000;
    const t0 = Date.now();
    await alice.client.sendTyping(roomId, true, TYPING_TIMEOUT_MS);
    // Nothing else from alice: the "false" can only come from the server's expiry.
    await until(() => seen.some((s) => s.typing), { what: () => `alice typing at bob (seen ${json(seen)})` });
    const on = seen.find((s) => s.typing);
    assert.ok(on.at - t0 < TYPING_TIMEOUT_MS, `alice's typing reached bob after ${on.at - t0} ms, past its own expiry`);
    assert.equal(bobSync.getRoom(roomId).getMember(alice.userId).typing, true);

    const off = await until(() => seen.find((s) => s.at >= on.at && !s.typing), {
        timeoutMs: EXPIRY_DEADLINE_MS - (Date.now() - t0),
        what: () => `alice's typing to expire at bob within ${EXPIRY_DEADLINE_MS} ms of the PUT (seen ${json(seen)})`,
    });
    const after = off.at - t0;
    assert.ok(
        after >= TYPING_TIMEOUT_MS - 100,
        `alice's typing ended at bob ${after} ms after the PUT, before its ${TYPING_TIMEOUT_MS} ms timeout`,
    );
    assert.equal(bobSync.getRoom(roomId).getMember(alice.userId).typing, false);
    t.diagnostic(`typing on at bob ${on.at - t0} ms after the PUT, off (expired) after ${after} ms`);
    assert.deepEqual(
        seen.map((s) => s.typing),
        [true, false],
        `RoomMember.typing for alice at bob: exactly on, then off`,
    );

    // What the server sent: m.typing with alice, later an m.typing whose user_ids no longer hold her.
    const typings = bobSync.rawLog.flatMap((r) =>
        ephemeralOf(r.body, roomId, "m.typing").map((e) => ({ user_ids: e.content?.user_ids, at: r.at })),
    );
    const iOn = typings.findIndex((e) => e.user_ids?.includes(alice.userId));
    assert.ok(iOn >= 0, `no m.typing with alice in bob's /sync: ${json(typings)}`);
    const iOff = typings.findIndex((e, i) => i > iOn && Array.isArray(e.user_ids) && !e.user_ids.includes(alice.userId));
    assert.ok(iOff > iOn, `no m.typing without alice after the one with her in bob's /sync: ${json(typings)}`);
    assert.deepEqual(typings[iOff].user_ids, [], "the room's typing list once alice's expired");
});

// ---------------------------------------------------------------------------
// Receipts

test("receipts: alice sees bob's m.read; bob's m.read.private reaches only bob", opts, async () => {
    const alice = await newUser("rcpt-alice");
    const bob = await newUser("rcpt-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob);
    const aliceSync = syncClient(alice);
    const bobSync = syncClient(bob);
    await startSyncing(aliceSync);
    await startSyncing(bobSync);

    const msg1 = await sendText(alice, roomId, "read me publicly");
    const msg2 = await sendText(alice, roomId, "read me privately");
    const bobRoom = bobSync.getRoom(roomId);
    const aliceRoom = aliceSync.getRoom(roomId);
    const ev1 = await until(() => bobRoom.findEventById(msg1), { what: "message 1 at bob" });
    const ev2 = await until(() => bobRoom.findEventById(msg2), { what: "message 2 at bob" });
    await until(() => aliceRoom.findEventById(msg2), { what: "message 2 at alice" });

    // 1. Public m.read on message 1: alice's client shows it (not synthesized: from the server).
    await bobSync.sendReadReceipt(ev1, ReceiptType.Read);
    await until(() => aliceRoom.getReadReceiptForUserId(bob.userId, true, ReceiptType.Read)?.eventId === msg1, {
        what: () =>
            `bob's m.read on message 1 at alice (has ${json(aliceRoom.getReadReceiptForUserId(bob.userId, true, ReceiptType.Read))})`,
    });
    const aliceEv1 = aliceRoom.findEventById(msg1);
    assert.ok(
        aliceRoom.getUsersReadUpTo(aliceEv1).includes(bob.userId),
        `getUsersReadUpTo(message 1) at alice: ${json(aliceRoom.getUsersReadUpTo(aliceEv1))}`,
    );
    assert.ok(
        aliceRoom.getReceiptsForEvent(aliceEv1).some((r) => r.userId === bob.userId && r.type === ReceiptType.Read),
        `getReceiptsForEvent(message 1) at alice: ${json(aliceRoom.getReceiptsForEvent(aliceEv1))}`,
    );
    assert.equal(aliceRoom.getEventReadUpTo(bob.userId, true), msg1, "getEventReadUpTo(bob) at alice");
    const pub = receiptsIn(bodiesOf(aliceSync), roomId).filter((r) => r.userId === bob.userId && r.type === "m.read");
    assert.deepEqual(pub.map((r) => r.eventId), [msg1], "bob's m.read receipts in alice's /sync");
    assert.equal(typeof pub[0].ts, "number", `m.read receipt without ts: ${json(pub[0])}`);

    // 2. Private m.read.private on message 2: bob's own /sync carries it (the SDK echoes it
    // locally at once, so the raw response is what shows the server sent it).
    await bobSync.sendReadReceipt(ev2, ReceiptType.ReadPrivate);
    await until(
        () =>
            receiptsIn(bodiesOf(bobSync), roomId).some(
                (r) => r.userId === bob.userId && r.type === "m.read.private" && r.eventId === msg2,
            ),
        { what: () => `bob's m.read.private in his own /sync (receipts ${json(receiptsIn(bodiesOf(bobSync), roomId))})` },
    );
    assert.equal(
        bobRoom.getReadReceiptForUserId(bob.userId, true, ReceiptType.ReadPrivate)?.eventId,
        msg2,
        "bob's client: his private receipt",
    );
    assert.equal(bobRoom.getEventReadUpTo(bob.userId, true), msg2, "bob's client: getEventReadUpTo(bob)");

    // Something after the private receipt: once alice has it, her /sync has covered the receipt's
    // position. Then alice must have nothing of the private receipt.
    const sentinel = await sendText(alice, roomId, "after the private receipt");
    await until(() => aliceRoom.findEventById(sentinel), { what: "the sentinel at alice" });
    await sleep(500);
    assert.equal(
        aliceRoom.getReadReceiptForUserId(bob.userId, true, ReceiptType.ReadPrivate) ?? null,
        null,
        "alice's client must not have bob's private receipt",
    );
    assert.equal(aliceRoom.getEventReadUpTo(bob.userId, true), msg1, "alice's client: bob still read up to message 1");
    const leaked = receiptsIn(bodiesOf(aliceSync), roomId).filter((r) => r.type === "m.read.private");
    assert.deepEqual(leaked, [], "alice's /sync responses must carry no m.read.private");
    for (const [i, r] of aliceSync.rawLog.entries()) {
        assert.ok(!json(r.body).includes("m.read.private"), `alice's /sync #${i} (since=${r.query.since}) mentions m.read.private`);
    }

    // Initial syncs (all current receipts): alice's has bob's m.read only, bob's has both.
    const aliceInit = receiptsIn([await rawSync(alice)], roomId).filter((r) => r.userId === bob.userId);
    assert.deepEqual(
        aliceInit.map((r) => [r.type, r.eventId]),
        [["m.read", msg1]],
        "bob's receipts in alice's initial /sync",
    );
    const bobInit = receiptsIn([await rawSync(bob)], roomId).filter((r) => r.userId === bob.userId);
    assert.deepEqual(
        bobInit.map((r) => [r.type, r.eventId]).sort(),
        [
            ["m.read", msg1],
            ["m.read.private", msg2],
        ],
        "bob's receipts in his own initial /sync",
    );
});

// ---------------------------------------------------------------------------
// Presence

test("presence: bob sees alice online, then offline after she stops syncing, with a growing last_active_ago", opts, async (t) => {
    const alice = await newUser("pres-alice");
    const bob = await newUser("pres-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob);

    const aliceSync = syncClient(alice);
    const aliceStart = Date.now();
    await startSyncing(aliceSync);
    const bobSync = syncClient(bob);
    const changes = [];
    bobSync.on(UserEvent.Presence, (_ev, user) => {
        if (user?.userId === alice.userId) {
            changes.push({ presence: user.presence, lastActiveAgo: user.lastActiveAgo, at: Date.now() });
        }
    });
    await startSyncing(bobSync);

    // 1. Online while her client syncs.
    await until(() => bobSync.getUser(alice.userId)?.presence === "online", {
        what: () => `alice online at bob (is ${bobSync.getUser(alice.userId)?.presence}; changes ${json(changes)})`,
    });
    const onlineUser = bobSync.getUser(alice.userId);
    assert.equal(typeof onlineUser.lastActiveAgo, "number", "User.lastActiveAgo while online");
    const got1 = await bob.client.getPresence(alice.userId);
    assert.equal(got1.presence, "online", `GET /presence while alice syncs: ${json(got1)}`);
    assert.equal(got1.currently_active, true, `GET /presence while alice syncs: ${json(got1)}`);
    assert.equal(typeof got1.last_active_ago, "number", `GET /presence while alice syncs: ${json(got1)}`);
    assert.ok(
        got1.last_active_ago <= Date.now() - aliceStart + 100,
        `last_active_ago ${got1.last_active_ago} ms predates alice's first /sync ${Date.now() - aliceStart} ms ago`,
    );

    // 2. She stops (stopClient aborts the long poll): after offline_timeout without a /sync she is
    // offline; past idle_timeout she may be unavailable in between.
    const seenBefore = changes.length;
    const stopAt = Date.now();
    aliceSync.stopClient();
    aliceSync.http.abort();
    const deadline = PRESENCE_OFFLINE_MS + 7_000;
    await until(() => bobSync.getUser(alice.userId)?.presence === "offline", {
        timeoutMs: deadline,
        intervalMs: 50,
        what: () =>
            `alice offline at bob within ${deadline} ms of her stop (offline_timeout ${PRESENCE_OFFLINE_MS} ms; ` +
            `she is ${bobSync.getUser(alice.userId)?.presence}; changes ${json(changes)})`,
    });
    const offlineAt = Date.now();
    const after = changes.slice(seenBefore).map((c) => c.presence);
    assert.ok(
        json(after) === json(["offline"]) || json(after) === json(["unavailable", "offline"]),
        `alice's presence at bob after she stopped: ${json(after)} (expected offline, or unavailable then offline)`,
    );
    const offlineChange = changes.at(-1);
    t.diagnostic(
        `after alice's stop bob saw ${changes
            .slice(seenBefore)
            .map((c) => `${c.presence} at +${c.at - stopAt} ms (last_active_ago ${c.lastActiveAgo})`)
            .join(", ")}`,
    );
    assert.ok(
        offlineChange.at - stopAt >= PRESENCE_OFFLINE_MS - 100,
        `alice went offline at bob ${offlineChange.at - stopAt} ms after her stop, before offline_timeout ${PRESENCE_OFFLINE_MS} ms`,
    );
    if (after.length === 2) {
        assert.ok(
            changes.at(-2).at - stopAt >= Math.min(PRESENCE_IDLE_MS, PRESENCE_OFFLINE_MS) - 100,
            `alice went unavailable ${changes.at(-2).at - stopAt} ms after her stop, before idle_timeout ${PRESENCE_IDLE_MS} ms`,
        );
    }

    // The m.presence event bob's client got: offline, not currently active, last_active_ago at
    // least the time since her stop when it was made.
    const raw = bobSync.rawLog.flatMap((r) =>
        (r.body?.presence?.events ?? []).filter((e) => e.sender === alice.userId).map((e) => ({ ...e, at: r.at })),
    );
    const rawOffline = raw.at(-1);
    assert.equal(rawOffline?.content?.presence, "offline", `alice's m.presence events at bob: ${json(raw)}`);
    assert.equal(rawOffline.type, "m.presence");
    assert.notEqual(rawOffline.content.currently_active, true, `offline yet currently_active: ${json(rawOffline)}`);
    assert.equal(typeof rawOffline.content.last_active_ago, "number", `offline m.presence without last_active_ago: ${json(rawOffline)}`);
    assert.ok(
        rawOffline.content.last_active_ago >= PRESENCE_OFFLINE_MS - 100,
        `offline m.presence says last active ${rawOffline.content.last_active_ago} ms ago, but she stopped syncing ` +
            `at least offline_timeout (${PRESENCE_OFFLINE_MS} ms) before: ${json(rawOffline)}`,
    );
    const user = bobSync.getUser(alice.userId);
    assert.equal(user.currentlyActive, false, "User.currentlyActive once offline");
    assert.ok(
        user.getLastActiveTs() <= stopAt + 100,
        `User.getLastActiveTs() ${user.getLastActiveTs()} is after alice stopped (${stopAt})`,
    );

    // 3. GET /presence: offline, and last_active_ago grows with the time since her last activity.
    const a = await bob.client.getPresence(alice.userId);
    const aAt = Date.now();
    await sleep(1_000);
    const b = await bob.client.getPresence(alice.userId);
    const bAt = Date.now();
    for (const g of [a, b]) {
        assert.equal(g.presence, "offline", `GET /presence after the stop: ${json(g)}`);
        assert.notEqual(g.currently_active, true, `GET /presence after the stop: ${json(g)}`);
        assert.equal(typeof g.last_active_ago, "number", `GET /presence after the stop: ${json(g)}`);
    }
    assert.ok(
        a.last_active_ago >= aAt - stopAt - 200,
        `last_active_ago ${a.last_active_ago} ms, yet alice stopped ${aAt - stopAt} ms ago`,
    );
    assert.ok(
        b.last_active_ago - a.last_active_ago >= 900,
        `last_active_ago must grow with time: ${a.last_active_ago} then ${b.last_active_ago} ms, ${bAt - aAt} ms apart`,
    );
    // Both name the same moment of last activity.
    assert.ok(
        Math.abs(bAt - b.last_active_ago - (aAt - a.last_active_ago)) < 250,
        `the last activity moved: ${aAt - a.last_active_ago} vs ${bAt - b.last_active_ago}`,
    );
    t.diagnostic(`GET /presence last_active_ago ${a.last_active_ago} then ${b.last_active_ago} ms, ${bAt - aAt} ms apart`);
    assert.ok(offlineAt - stopAt < deadline);
});

// ---------------------------------------------------------------------------
// Offline device

test("offline device: bob's device resumes from its token and gets the 30 missed messages once, in order", opts, async () => {
    const alice = await newUser("off-alice");
    const bob = await newUser("off-bob");
    const roomId = await createRoom(alice, { preset: "private_chat", name: `offline ${tag()}` });
    await inviteAndJoin(roomId, alice, bob);

    // A timeline limit with room for all 30: the resumed /sync must not be limited.
    // What a persistent store (IndexedDB) keeps across restarts: accumulated sync data and token.
    const saved = new sdk.SyncAccumulator();
    const { client: first, live: live1 } = await startPersisted(bob, saved, roomId, 50);
    const before = await sendText(alice, roomId, "before going offline");
    await until(() => live1.some((e) => e.id === before), { what: "the message before going offline" });
    await until(() => saved.getNextBatchToken() === first.store.getSyncToken(), { what: "the store to catch up" });
    const token = saved.getNextBatchToken();
    assert.equal(typeof token, "string");
    first.stopClient();
    first.http.abort();

    const sent = await sendMany(alice, roomId, 30, `offline ${tag()}`);

    const { client: second, live: live2 } = await startPersisted(bob, saved, roomId, 50);
    await until(() => live2.some((e) => e.id === sent.at(-1).id), {
        what: () => `the last of the 30 at the resumed client (has ${live2.length})`,
    });
    // One more after the resume, so any late duplicate of the 30 would have come by then.
    const after = await sendText(alice, roomId, "after the resume");
    await until(() => live2.some((e) => e.id === after), { what: "a live message after the resume" });

    // The SDK: the 30, each once, in order, live; nothing from before the stop again.
    assertSameSequence(
        live2.filter((e) => e.id !== after && e.id !== before),
        sent,
        "Room.timeline events of the resumed client",
    );
    assert.equal(live2.filter((e) => e.id === before).length, 0, "the message from before the stop came again");
    const room = second.getRoom(roomId);
    const tail = liveMessages(room);
    assertSameSequence(
        tail.slice(tail.findIndex((e) => e.id === sent[0].id)).filter((e) => e.id !== after),
        sent,
        "the resumed client's live timeline",
    );

    // The server: the first /sync is from the saved token, not limited, and holds exactly the 30.
    const syncs = second.rawLog;
    assert.equal(syncs[0]?.query.since, token, "the resumed client's first /sync must use the saved token");
    assert.ok(!syncs.some((r) => !r.query.since), "the resumed client must not do an initial sync");
    const tl = syncs[0].body?.rooms?.join?.[roomId]?.timeline;
    assert.ok(tl, `the room is missing from the resumed /sync: ${json(Object.keys(syncs[0].body?.rooms?.join ?? {}))}`);
    assert.equal(tl.limited, false, `30 events under a limit of 50 must not be limited (prev_batch ${tl.prev_batch})`);
    assertSameSequence(tl.events, sent, "the timeline of the resumed /sync");
    const all = syncs.flatMap((r) => r.body?.rooms?.join?.[roomId]?.timeline?.events ?? []);
    for (const m of sent) {
        const n = all.filter((e) => e.event_id === m.id).length;
        assert.equal(n, 1, `${m.body} (${m.id}) came ${n} times in the resumed client's /sync responses`);
    }
    assert.ok(!all.some((e) => e.event_id === before), "the resumed /sync resent the event before the token");

    // The same token over plain /sync gives the same answer (a token can be resumed from again).
    const again = await rawSync(bob, { since: token, filter: json({ room: { timeline: { limit: 50 } } }) });
    const tl2 = again.rooms?.join?.[roomId]?.timeline;
    assert.equal(tl2?.limited, false, "plain /sync from the token: limited");
    assertSameSequence(
        tl2.events.filter((e) => e.event_id !== after),
        sent,
        "plain /sync from the saved token",
    );
});

// ---------------------------------------------------------------------------
// Delivery receipts

test("delivery receipts: alice sees dev.hearth.delivered for bob (opted in) and none for carol", opts, async (t) => {
    const alice = await newUser("dlv-alice");
    const bob = await newUser("dlv-bob");
    const carol = await newUser("dlv-carol");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob, carol);

    // Bob opts in; carol does not.
    await bob.client.setAccountData(DELIVERY_OPT_IN, { enabled: true });
    const optIn = await bob.client.http.authedRequest(
        Method.Get,
        `/user/${encodeURIComponent(bob.userId)}/account_data/${DELIVERY_OPT_IN}`,
    );
    assert.deepEqual(optIn, { enabled: true }, "bob's opt-in account data");

    const aliceSync = syncClient(alice);
    const bobSync = syncClient(bob);
    const carolSync = syncClient(carol);
    await startSyncing(aliceSync);
    await startSyncing(bobSync);
    await startSyncing(carolSync);
    const bobLive = collectLive(bobSync, roomId);
    const carolLive = collectLive(carolSync, roomId);

    const delivered = () => receiptsIn(bodiesOf(aliceSync), roomId).filter((r) => r.type === DELIVERED);

    const sendStart = Date.now();
    const msg = await sendText(alice, roomId, "did this arrive?");
    await until(() => bobLive.some((e) => e.id === msg), { what: "the message at bob" });
    await until(() => carolLive.some((e) => e.id === msg), { what: "the message at carol" });
    const r1 = await until(() => delivered().find((r) => r.userId === bob.userId && r.eventId === msg), {
        what: () => `${DELIVERED} for bob on the message in alice's /sync (receipts ${json(receiptsIn(bodiesOf(aliceSync), roomId))})`,
    });
    assert.equal(typeof r1.ts, "number", `delivery receipt without ts: ${json(r1)}`);
    t.diagnostic(`bob's delivery receipt reached alice ${Date.now() - sendStart} ms after the send started`);
    assert.ok(
        r1.ts >= sendStart - 1_000 && r1.ts <= Date.now() + 1_000,
        `delivery receipt ts ${r1.ts} is outside the send (${sendStart}) .. now window`,
    );

    // A second message moves bob's receipt to it; by then carol's sync of message 1 (and any
    // receipt it would have made) lies well behind.
    const msg2 = await sendText(alice, roomId, "and this one?");
    await until(() => carolLive.some((e) => e.id === msg2), { what: "message 2 at carol" });
    await until(() => delivered().some((r) => r.userId === bob.userId && r.eventId === msg2), {
        what: () => `${DELIVERED} for bob on message 2 in alice's /sync (receipts ${json(delivered())})`,
    });
    await sleep(500);

    const fromOthers = delivered().filter((r) => r.userId !== bob.userId);
    assert.deepEqual(fromOthers, [], `only bob opted in, yet alice's /sync has delivery receipts of others`);
    // The SDK keeps only m.read / m.read.private; the client's receipt API ignores this type.
    // Every delivery receipt of bob is on an event someone else sent.
    const bobDelivered = delivered().filter((r) => r.userId === bob.userId);
    for (const r of bobDelivered) {
        const ev = aliceSync.getRoom(roomId).findEventById(r.eventId);
        assert.notEqual(ev?.getSender(), bob.userId, `bob's delivery receipt on his own event ${r.eventId}`);
    }

    // Initial /sync (all current receipts): bob's delivery receipt on message 2, none for carol.
    const init = receiptsIn([await rawSync(alice)], roomId).filter((r) => r.type === DELIVERED);
    assert.deepEqual(
        init.map((r) => [r.userId, r.eventId]),
        [[bob.userId, msg2]],
        "delivery receipts in alice's initial /sync",
    );

    // Carol and bob see bob's receipt too (room members); carol never produced one.
    const carolSeen = receiptsIn(bodiesOf(carolSync), roomId).filter((r) => r.type === DELIVERED);
    assert.ok(!carolSeen.some((r) => r.userId === carol.userId), `carol's own /sync has her delivery receipt: ${json(carolSeen)}`);
});
