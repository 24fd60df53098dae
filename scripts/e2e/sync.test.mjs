// GET /sync driven the way real clients drive it: matrix-js-sdk's startClient() sync loop
// (initial sync, then incremental long polls), its Room/RoomMember/accountData events, its
// timeline pagination (scrollback, paginateEventTimeline) and its restart from a saved sync
// token. Senders use plain REST clients (sendMessage, invite, kick, ...), as in rooms.test.mjs.
//
// Run: HS_E2E_BASE_URL=http://127.0.0.1:18008 HS_E2E_SERVER_NAME=localhost \
//      node --test --test-force-exit --test-concurrency=1 sync.test.mjs
//
// Besides what the SDK exposes, the syncing clients record the raw /sync and /messages
// responses they receive (a recording fetchFn), because the SDK silently drops an event it
// already has: a server that sent an event twice would otherwise go unnoticed.
//
// Push rules: startClient() fetches GET /pushrules/ before its first /sync and retries that
// forever on any error (SyncApi.getPushRules), so without that endpoint no client ever reaches
// PREPARED. The file therefore checks it first and fails at once with an explanation. Set
// HS_E2E_STUB_PUSHRULES=1 to run the tests anyway: the clients then skip the fetch and use the
// SDK's default rules (a warning says so). Typing, receipts and presence tests skip themselves
// (with the reason) while the server answers their endpoints with 404 M_UNRECOGNIZED.
//
// Every test registers its own users (unique names), so tests are independent of each other and
// of earlier runs against the same server. afterEach stops every client.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";

import {
    LIVE_DEADLINE_MS,
    MatrixError,
    Method,
    startPersisted,
    TEST_TIMEOUT_MS,
    assertSameSequence,
    collectLive,
    createRoom,
    describeError,
    inviteAndJoin,
    json,
    liveMessages,
    loginDevice,
    newUser,
    registerUser,
    requireServer,
    sdk,
    sendMany,
    sendText,
    startSyncing,
    stopAllClients,
    syncClient as recordingSyncClient,
    tag,
    until,
} from "./helpers.mjs";

// Fail the whole file at once, with a clear message, if no server is there.
await requireServer();

afterEach(() => stopAllClients());

const opts = { timeout: TEST_TIMEOUT_MS };

const { ClientEvent, RoomEvent, RoomMemberEvent } = sdk;

// ---------------------------------------------------------------------------
// Push rules pre-flight (see the header).

const STUB_PUSH_RULES_REQUESTED = process.env.HS_E2E_STUB_PUSHRULES === "1";
let stubPushRules = false;
{
    const probe = await registerUser({ prefix: "sync-preflight" });
    try {
        await probe.client.getPushRules();
        if (STUB_PUSH_RULES_REQUESTED) {
            console.error("sync.test.mjs: HS_E2E_STUB_PUSHRULES=1 is not needed, GET /pushrules/ works; ignoring it");
        }
    } catch (err) {
        const detail =
            err instanceof MatrixError
                ? `HTTP ${err.httpStatus} ${err.errcode ?? ""} ${json(err.data)}`
                : `${err?.name}: ${err?.message}`;
        if (!STUB_PUSH_RULES_REQUESTED) {
            throw new Error(
                `sync.test.mjs: GET /_matrix/client/v3/pushrules/ failed (${detail}). matrix-js-sdk's ` +
                    `startClient() fetches the push rules before its first /sync and retries forever on ` +
                    `failure (SyncApi.getPushRules -> recoverFromSyncStartupError), so no client ever ` +
                    `reaches PREPARED against this server and none of the sync tests can run. The server ` +
                    `needs GET /pushrules/ (at least the default rule set). To run the sync tests anyway, ` +
                    `set HS_E2E_STUB_PUSHRULES=1 (clients then use the SDK's default rules without fetching).`,
            );
        }
        stubPushRules = true;
        console.error(
            `sync.test.mjs: WARNING: GET /pushrules/ failed (${detail}); HS_E2E_STUB_PUSHRULES=1, so the ` +
                `syncing clients use the SDK's default push rules instead of fetching them.`,
        );
    } finally {
        probe.client.stopClient();
    }
}

// ---------------------------------------------------------------------------
// Clients and raw responses

/**
 * A client for `user` meant for startClient(). It records its raw /sync and /messages responses
 * in client.rawLog (helpers.mjs syncClient). `store` replaces the default MemoryStore.
 */
function syncClient(user, { store } = {}) {
    return recordingSyncClient(user, { store, recordMessages: true, stubPushRules });
}

/**
 * The recorded /sync exchanges of `client` for `roomId`, one line each: since -> next_batch,
 * limited, prev_batch and the timeline's event IDs (marking `ids`); for failure messages.
 */
function describeSyncs(client, roomId, ids = []) {
    const mark = new Set(ids);
    return client.rawLog
        .filter((r) => r.kind === "sync")
        .map((r) => {
            const tl = r.body?.rooms?.join?.[roomId]?.timeline;
            const evs = (tl?.events ?? []).map((e) => `${e.event_id}${mark.has(e.event_id) ? "*" : ""}`);
            return (
                `  since=${r.query.since ?? "(initial)"} -> next_batch=${r.body?.next_batch}` +
                (tl ? ` limited=${tl.limited} prev_batch=${tl.prev_batch} events=[${evs.join(" ")}]` : " (room absent)")
            );
        })
        .join("\n");
}

/** Room timeline events (raw JSON) the server sent for `roomId` in the recorded /sync responses. */
function rawSyncTimeline(rawLog, roomId, section = "join") {
    return rawLog
        .filter((r) => r.kind === "sync")
        .flatMap((r) => r.body?.rooms?.[section]?.[roomId]?.timeline?.events ?? []);
}

function assertNoDuplicateEventIds(events, what) {
    const seen = new Set();
    for (const ev of events) {
        assert.ok(!seen.has(ev.event_id), `${what}: the server sent ${ev.event_id} (${ev.type}) twice`);
        seen.add(ev.event_id);
    }
}

/** Runs `fn`; if the server answers 404 M_UNRECOGNIZED, skips the test with `why` and returns false. */
async function unlessUnrecognized(t, fn, why) {
    try {
        await fn();
        return true;
    } catch (err) {
        if (err instanceof MatrixError && err.httpStatus === 404 && err.errcode === "M_UNRECOGNIZED") {
            t.skip(`${why}: the server answers 404 M_UNRECOGNIZED (not implemented yet)`);
            return false;
        }
        throw err;
    }
}

// ---------------------------------------------------------------------------
// (a) live delivery

test("live: bob receives 50 quickly sent messages via Room.timeline, in order, each exactly once", opts, async (t) => {
    const alice = await newUser("live-alice");
    const bob = await newUser("live-bob");
    const roomId = await createRoom(alice, { preset: "private_chat", name: `live ${tag()}` });
    await inviteAndJoin(roomId, alice, bob);

    // The SDK's default filter sets no timeline limit, so the server's default (10) applies: a
    // client that falls 11 events behind (easy at ~100 messages/s) gets a limited timeline and a
    // gap to back-paginate, which is correct but not "live". Room for the whole batch keeps every
    // event live; gaps are covered by the restart tests.
    const filter = new sdk.Filter(bob.userId);
    filter.setTimelineLimit(100);
    const bobSync = syncClient(bob);
    const live = collectLive(bobSync, roomId);
    await startSyncing(bobSync, { filter });
    const room = bobSync.getRoom(roomId);
    assert.ok(room, "bob's client must know the room after the initial sync");
    assert.equal(room.getMyMembership(), "join");

    const label = `live ${tag()}`;
    const sent = await sendMany(alice, roomId, 50, label);
    const lastAck = sent.at(-1).ackAt;
    await until(() => live.some((e) => e.id === sent.at(-1).id), {
        what: () => `the last of 50 messages at bob (he has ${live.length})`,
    });
    // A marker after the batch: once bob has it, every earlier event has been delivered (or lost).
    const marker = await sendText(alice, roomId, `${label} end`);
    await until(() => live.some((e) => e.id === marker), { what: "the end marker at bob" });

    // Where the server's event stream positions are, for the failure message.
    const positions = async (ids) => {
        const lines = [];
        for (const id of ids.slice(0, 10)) {
            const ctx = await alice.client.http
                .authedRequest(Method.Get, `/rooms/${encodeURIComponent(roomId)}/context/${encodeURIComponent(id)}`, { limit: "0" })
                .catch((e) => ({ error: describeError(e) }));
            lines.push(`  ${id}: /context start=${ctx.start} end=${ctx.end}${ctx.error ? ` ${ctx.error}` : ""}`);
        }
        return lines.join("\n");
    };
    const liveGot = live.filter((e) => e.id !== marker);
    const gotIds = new Set(liveGot.map((e) => e.id));
    const lost = sent.filter((e) => !gotIds.has(e.id)).map((e) => e.id);
    const explainLost = lost.length ? await positions(lost) : "";
    assertSameSequence(
        liveGot,
        sent,
        "bob's live Room.timeline events",
        (ids) => `bob's /sync exchanges (* = missing/duplicated):\n${describeSyncs(bobSync, roomId, ids)}\n${explainLost}`,
    );
    assertSameSequence(
        liveMessages(room).filter((e) => e.id !== marker),
        sent,
        "bob's live timeline",
    );
    assertNoDuplicateEventIds(rawSyncTimeline(bobSync.rawLog, roomId), "bob's /sync timelines");
    const limited = bobSync.rawLog.filter((r) => r.kind === "sync" && r.body?.rooms?.join?.[roomId]?.timeline?.limited);
    assert.equal(limited.length, 0, `no /sync may be limited with a timeline limit of 100:\n${describeSyncs(bobSync, roomId)}`);

    const delays = sent.map((s) => live.find((e) => e.id === s.id).at - s.ackAt).sort((x, y) => x - y);
    const maxDelay = delays.at(-1);
    t.diagnostic(
        `delivery after the sender's 200: median ${delays[delays.length >> 1]} ms, max ${maxDelay} ms; ` +
            `all 50 at bob ${live.find((e) => e.id === sent.at(-1).id).at - lastAck} ms after the last send`,
    );
    assert.ok(maxDelay <= LIVE_DEADLINE_MS, `a message took ${maxDelay} ms to reach bob`);
});

test("live: 5 senders at once, 50 messages: each reaches bob exactly once, in the server's order", opts, async (t) => {
    const alice = await newUser("burst-alice");
    const bob = await newUser("burst-bob");
    const others = [];
    for (let i = 0; i < 4; i++) others.push(await newUser(`burst-s${i}`));
    const roomId = await createRoom(alice, { preset: "private_chat", name: `burst ${tag()}` });
    await inviteAndJoin(roomId, alice, bob, ...others);

    // A filter with room for the whole burst in one response, so no sync is limited and every
    // event must arrive live.
    const filter = new sdk.Filter(bob.userId);
    filter.setTimelineLimit(100);
    const bobSync = syncClient(bob);
    const live = collectLive(bobSync, roomId);
    await startSyncing(bobSync, { filter });

    const label = `burst ${tag()}`;
    const senders = [alice, ...others];
    const batches = await Promise.all(senders.map((u, s) => sendMany(u, roomId, 10, `${label} s${s}`)));
    const sent = batches.flat();
    const marker = await sendText(alice, roomId, `${label} end`);
    await until(() => live.some((e) => e.id === marker), {
        what: () => `the end marker at bob (he has ${live.length} of ${sent.length})`,
    });

    // The server's order: /messages backwards from the end, reversed.
    const order = [];
    let from = null;
    for (let page = 0; page < 20; page++) {
        const res = await alice.client.createMessagesRequest(roomId, from, 100, "b");
        order.push(...res.chunk);
        if (!res.end || res.chunk.some((e) => e.type === "m.room.create")) break;
        from = res.end;
    }
    const sentIds = new Set(sent.map((e) => e.id));
    const serverOrder = order
        .reverse()
        .filter((e) => sentIds.has(e.event_id))
        .map((e) => ({ id: e.event_id, body: e.content?.body }));
    assert.equal(serverOrder.length, sent.length, "/messages must hold every message of the burst");
    assertSameSequence(
        live.filter((e) => e.id !== marker),
        serverOrder,
        "bob's live Room.timeline events against the server's /messages order",
    );
    const raw = rawSyncTimeline(bobSync.rawLog, roomId);
    assertNoDuplicateEventIds(raw, "bob's /sync timelines");
    const limited = bobSync.rawLog.filter((r) => r.kind === "sync" && r.body?.rooms?.join?.[roomId]?.timeline?.limited);
    assert.equal(limited.length, 0, "no /sync may be limited with a timeline limit of 100 for 51 events");
    t.diagnostic(`${bobSync.rawLog.filter((r) => r.kind === "sync").length} /sync responses for the burst`);
});

// ---------------------------------------------------------------------------
// (b) invites

test("invite: arrives via sync (Room, RoomMember.membership), bob joins with client.joinRoom", opts, async () => {
    const alice = await newUser("inv-alice");
    const bob = await newUser("inv-bob");
    const bobSync = syncClient(bob);
    const myMemberships = [];
    const newRooms = [];
    bobSync.on(RoomMemberEvent.Membership, (_ev, member, oldMembership) => {
        if (member.userId === bob.userId) {
            myMemberships.push({ roomId: member.roomId, membership: member.membership, oldMembership });
        }
    });
    bobSync.on(ClientEvent.Room, (room) => newRooms.push(room.roomId));
    await startSyncing(bobSync);

    const name = `invite ${tag()}`;
    const topic = `topic ${tag()}`;
    const roomId = await createRoom(alice, { preset: "private_chat", name, topic });
    const before = await sendText(alice, roomId, "before the invite");
    await alice.client.invite(roomId, bob.userId, "e2e invite reason");

    await until(() => myMemberships.some((m) => m.roomId === roomId && m.membership === "invite"), {
        what: () => `bob's RoomMember.membership 'invite' (seen ${json(myMemberships)})`,
    });
    assert.ok(newRooms.includes(roomId), "a 'Room' event must announce the room bob is invited to");
    const room = bobSync.getRoom(roomId);
    assert.equal(room.getMyMembership(), "invite");
    // invite_state (stripped state) carries the name, the topic and the inviter's member event.
    assert.equal(room.name, name, "room name from invite_state");
    assert.equal(room.currentState.getStateEvents("m.room.topic", "")?.getContent().topic, topic, "topic from invite_state");
    const invite = room.getMember(bob.userId)?.events.member;
    assert.equal(invite?.getSender(), alice.userId, "the invite's sender");
    assert.equal(invite?.getContent().reason, "e2e invite reason");

    const joined = await bobSync.joinRoom(roomId);
    assert.equal(joined.roomId, roomId);
    await until(() => bobSync.getRoom(roomId)?.getMyMembership() === "join", {
        what: () => `bob's membership 'join' via sync (is ${bobSync.getRoom(roomId)?.getMyMembership()})`,
    });
    const after = await sendText(alice, roomId, "after the join");
    await until(() => liveMessages(bobSync.getRoom(roomId)).some((e) => e.id === after), {
        what: "alice's message after the join in bob's timeline",
    });
    const msgs = liveMessages(bobSync.getRoom(roomId));
    assert.deepEqual(
        msgs.map((e) => e.id).filter((id) => id === before || id === after),
        // private_chat history is "shared": the earlier message may or may not be in the
        // joined timeline (sync timeline limit); if it is, it comes first.
        msgs.some((e) => e.id === before) ? [before, after] : [after],
    );
    assert.deepEqual(
        myMemberships.filter((m) => m.roomId === roomId).map((m) => m.membership),
        ["invite", "join"],
        "bob's own membership transitions, each once",
    );
    // The raw sync carried the room in rooms.invite first, then rooms.join.
    const sections = bobSync.rawLog
        .filter((r) => r.kind === "sync")
        .map((r) => (r.body?.rooms?.invite?.[roomId] ? "invite" : r.body?.rooms?.join?.[roomId] ? "join" : null))
        .filter(Boolean);
    assert.equal(sections[0], "invite", `first /sync mention of the room: ${json(sections)}`);
    assert.ok(sections.includes("join"), `the room must appear under rooms.join after joining: ${json(sections)}`);
});

// ---------------------------------------------------------------------------
// (c) state

test("state: name and topic (initial sync and live) show in bob's room.name and currentState", opts, async () => {
    const alice = await newUser("state-alice");
    const bob = await newUser("state-bob");
    const roomId = await createRoom(alice, { preset: "private_chat", name: "first name", topic: "first topic" });
    await inviteAndJoin(roomId, alice, bob);
    // Change the name, then push it out of the initial sync's timeline window: it must come in
    // the state section.
    const name1 = `renamed ${tag()}`;
    await alice.client.setRoomName(roomId, name1);
    await sendMany(alice, roomId, 30, "filler");

    const bobSync = syncClient(bob);
    await startSyncing(bobSync, { initialSyncLimit: 20 });
    const room = bobSync.getRoom(roomId);
    assert.equal(room.name, name1, "room.name after the initial sync (name event outside the timeline window)");
    assert.equal(room.currentState.getStateEvents("m.room.topic", "")?.getContent().topic, "first topic");
    assert.equal(room.currentState.getJoinedMemberCount(), 2, "joined members after the initial sync");
    assert.equal(room.currentState.getStateEvents("m.room.create", "")?.getSender(), alice.userId);

    const nameEvents = [];
    bobSync.on(RoomEvent.Name, (r) => r.roomId === roomId && nameEvents.push(r.name));
    const name2 = `live name ${tag()}`;
    const topic2 = `live topic ${tag()}`;
    await alice.client.setRoomName(roomId, name2);
    await alice.client.setRoomTopic(roomId, topic2);
    await until(() => room.currentState.getStateEvents("m.room.topic", "")?.getContent().topic === topic2, {
        what: () => `the new topic in bob's currentState (is ${json(room.currentState.getStateEvents("m.room.topic", "")?.getContent())})`,
    });
    assert.equal(room.name, name2, "room.name after the live rename");
    assert.ok(nameEvents.includes(name2), `Room.name event with the new name (got ${json(nameEvents)})`);
    assert.equal(room.currentState.getStateEvents("m.room.name", "")?.getSender(), alice.userId);

    // A state change also appears once in the timeline, as a state event.
    const nameChanges = room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.name" && e.getContent().name === name2);
    assert.equal(nameChanges.length, 1, "the rename must be in bob's timeline once");
});

// ---------------------------------------------------------------------------
// (d) history

/** Back-paginates `room` with `step` until the start of the room; returns the number of steps. */
async function paginateToStart(client, room, step, { how = "scrollback", maxSteps = 100 } = {}) {
    for (let i = 0; i < maxSteps; i++) {
        if (how === "scrollback") {
            if (room.oldState.paginationToken === null) return i;
            await client.scrollback(room, step);
        } else {
            const more = await client.paginateEventTimeline(room.getLiveTimeline(), { backwards: true, limit: step });
            if (!more) return i;
        }
    }
    assert.fail(`${how}: not at the start of the room after ${maxSteps} steps`);
}

for (const how of ["scrollback", "paginateEventTimeline"]) {
    test(`history: a client started later pages back (${how}) with no gap or duplicate`, opts, async () => {
        const alice = await newUser("hist-alice");
        const bob = await newUser("hist-bob");
        const roomId = await createRoom(alice, { preset: "private_chat", name: `history ${tag()}` });
        // private_chat: history_visibility "shared", so bob, joining later, may read it all.
        const early = await sendMany(alice, roomId, 40, "early");
        await inviteAndJoin(roomId, alice, bob);
        const late = await sendMany(alice, roomId, 35, "late");
        const sent = [...early, ...late];

        const bobSync = syncClient(bob);
        await startSyncing(bobSync, { initialSyncLimit: 20 });
        const room = bobSync.getRoom(roomId);
        const initial = liveMessages(room);
        assert.ok(initial.length > 0 && initial.length <= 20, `initial sync timeline: ${initial.length} messages`);
        assertSameSequence(initial, sent.slice(-initial.length), "the initial sync's timeline");

        const steps = await paginateToStart(bobSync, room, 17, { how });
        const all = liveMessages(room);
        assertSameSequence(all, sent, `bob's timeline after ${steps} ${how} steps`);
        const first = room.getLiveTimeline().getEvents()[0];
        assert.equal(first?.getType(), "m.room.create", `the timeline must start at m.room.create, not ${first?.getType()}`);
        const allIds = room.getLiveTimeline().getEvents().map((e) => e.getId());
        assert.equal(new Set(allIds).size, allIds.length, "no event twice in bob's timeline");

        // What the server sent: initial sync timeline + /messages pages, no event twice.
        const rawMessages = bobSync.rawLog.filter((r) => r.kind === "messages");
        assert.ok(rawMessages.length >= 2, `expected several /messages pages, got ${rawMessages.length}`);
        const served = [
            ...rawSyncTimeline(bobSync.rawLog, roomId),
            ...rawMessages.flatMap((r) => r.body?.chunk ?? []),
        ];
        assertNoDuplicateEventIds(served, "initial /sync + /messages");
    });
}

// ---------------------------------------------------------------------------
// (e) account data

test("account data: set on one device reaches the other via sync ('accountData', 'Room.accountData')", opts, async () => {
    const user = await newUser("ad");
    const dev2 = await loginDevice(user);
    const type = `org.example.e2e.${tag()}`;
    const roomType = `org.example.e2e.room.${tag()}`;
    const roomId = await createRoom(user, { preset: "private_chat" });

    // Set before the second device starts: it must be in its initial sync.
    await user.client.setAccountDataRaw(type, { v: 1 });

    const one = syncClient(user);
    const two = syncClient(dev2);
    const seen = [];
    const seenRoom = [];
    two.on(ClientEvent.AccountData, (ev) => ev.getType() === type && seen.push(ev.getContent()));
    two.on(RoomEvent.AccountData, (ev, room) => room.roomId === roomId && ev.getType() === roomType && seenRoom.push(ev.getContent()));
    await startSyncing(one);
    await startSyncing(two);
    assert.deepEqual(two.getAccountData(type)?.getContent(), { v: 1 }, "global account data in the initial sync");

    // setAccountData on a running client resolves once its own sync has echoed the change.
    await one.setAccountData(type, { v: 2, nested: { ok: true } });
    await until(() => seen.some((c) => c.v === 2), { what: () => `v2 on device 2 (seen ${json(seen)})` });
    assert.deepEqual(two.getAccountData(type)?.getContent(), { v: 2, nested: { ok: true } });
    assert.deepEqual(one.getAccountData(type)?.getContent(), { v: 2, nested: { ok: true } });

    await one.setRoomAccountData(roomId, roomType, { pinned: ["a", "b"] });
    await until(() => seenRoom.length > 0, { what: "room account data on device 2" });
    assert.deepEqual(two.getRoom(roomId).getAccountData(roomType)?.getContent(), { pinned: ["a", "b"] });

    // A second update of the same type replaces the first.
    await one.setRoomAccountData(roomId, roomType, { pinned: [] });
    await until(() => json(two.getRoom(roomId).getAccountData(roomType)?.getContent()) === json({ pinned: [] }), {
        what: "the updated room account data on device 2",
    });
    assert.deepEqual(seen.filter((c) => c.v === 2).length, 1, "the global update must arrive once");
});

// ---------------------------------------------------------------------------
// (f) kick

test("kick: the kicked user gets membership 'leave' via sync and none of the later messages", opts, async () => {
    const alice = await newUser("kick-alice");
    const bob = await newUser("kick-bob");
    const roomId = await createRoom(alice, { preset: "private_chat", name: `kick ${tag()}` });
    const sentinelRoom = await createRoom(alice, { preset: "private_chat", name: `sentinel ${tag()}` });
    await inviteAndJoin(roomId, alice, bob);
    await inviteAndJoin(sentinelRoom, alice, bob);

    const bobSync = syncClient(bob);
    const live = collectLive(bobSync, roomId);
    const liveSentinel = collectLive(bobSync, sentinelRoom);
    await startSyncing(bobSync);
    const myMemberships = []; // from now on (the initial sync replays invite and join)
    bobSync.on(RoomMemberEvent.Membership, (_ev, member) => {
        if (member.userId === bob.userId && member.roomId === roomId) myMemberships.push(member.membership);
    });
    const before = await sendText(alice, roomId, "before the kick");
    await until(() => live.some((e) => e.id === before), { what: "the message before the kick" });

    await alice.client.kick(roomId, bob.userId, "e2e kick");
    await until(() => bobSync.getRoom(roomId)?.getMyMembership() === "leave", {
        what: () => `bob's membership 'leave' (is ${bobSync.getRoom(roomId)?.getMyMembership()})`,
    });
    assert.deepEqual(myMemberships, ["leave"], "RoomMember.membership for bob");
    const leaveEvent = bobSync.getRoom(roomId).getMember(bob.userId)?.events.member;
    assert.equal(leaveEvent?.getSender(), alice.userId, "the kick's sender");
    assert.equal(leaveEvent?.getContent().reason, "e2e kick");

    const after = await sendMany(alice, roomId, 3, "after the kick");
    await alice.client.setRoomName(roomId, "renamed after the kick");
    // Once bob has the sentinel, every /sync that could have carried the later events has come.
    const sentinel = await sendText(alice, sentinelRoom, "sentinel");
    await until(() => liveSentinel.some((e) => e.id === sentinel), { what: "the sentinel message" });

    const leaked = live.filter((e) => after.some((a) => a.id === e.id));
    assert.deepEqual(leaked, [], "bob must not receive messages sent after his kick");
    assert.notEqual(bobSync.getRoom(roomId).name, "renamed after the kick", "bob must not see state set after his kick");

    // Raw: the kick came under rooms.leave with the leave event in its timeline; after that the
    // room shows up nowhere (no join, no leave with later events).
    const syncs = bobSync.rawLog.filter((r) => r.kind === "sync");
    const kickIdx = syncs.findIndex((r) => r.body?.rooms?.leave?.[roomId]);
    assert.ok(kickIdx >= 0, "a /sync response must list the room under rooms.leave");
    const leaveTl = syncs[kickIdx].body.rooms.leave[roomId].timeline?.events ?? [];
    assert.ok(
        leaveTl.some((e) => e.type === "m.room.member" && e.state_key === bob.userId && e.content?.membership === "leave"),
        `rooms.leave timeline must hold the kick: ${json(leaveTl.map((e) => [e.type, e.state_key, e.content?.membership]))}`,
    );
    for (const r of syncs.slice(kickIdx + 1)) {
        const leak = [
            ...(r.body?.rooms?.join?.[roomId]?.timeline?.events ?? []),
            ...(r.body?.rooms?.leave?.[roomId]?.timeline?.events ?? []),
        ];
        assert.deepEqual(
            leak.map((e) => `${e.type} ${e.event_id}`),
            [],
            `a /sync after the kick (since=${r.query.since}) carried events of the room bob left`,
        );
    }
});

// ---------------------------------------------------------------------------
// (g) restart resilience

test("restart: an incremental /sync from a saved since token returns exactly what happened meanwhile", opts, async () => {
    const alice = await newUser("since-alice");
    const bob = await newUser("since-bob");
    const roomId = await createRoom(alice, { preset: "private_chat", name: "before the stop" });
    await inviteAndJoin(roomId, alice, bob);

    const bobSync = syncClient(bob);
    const live = collectLive(bobSync, roomId);
    await startSyncing(bobSync);
    const seenId = await sendText(alice, roomId, "seen before the stop");
    await until(() => live.some((e) => e.id === seenId), { what: "the message before the stop" });
    const since = bobSync.store.getSyncToken();
    assert.equal(typeof since, "string");
    bobSync.stopClient();

    const newName = `renamed while stopped ${tag()}`;
    await alice.client.setRoomName(roomId, newName);
    const sent = await sendMany(alice, roomId, 15, "while stopped");

    const rawSync = (query) =>
        bob.client.http.authedRequest(Method.Get, "/sync", { timeout: "0", ...query }, undefined);

    // 1. A big enough limit: everything since the token, in order, not limited.
    const full = await rawSync({ since, filter: json({ room: { timeline: { limit: 50 } } }) });
    const tl = full.rooms?.join?.[roomId]?.timeline;
    assert.ok(tl, `room missing from rooms.join: ${json(Object.keys(full.rooms?.join ?? {}))}`);
    assert.equal(tl.limited, false, "16 new events with limit 50 must not be limited");
    assert.deepEqual(
        tl.events.map((e) => e.type),
        ["m.room.name", ...sent.map(() => "m.room.message")],
        "the timeline since the token",
    );
    assertSameSequence(
        tl.events.filter((e) => e.type === "m.room.message").map((e) => e.event_id),
        sent,
        "messages since the token",
    );
    assert.ok(!tl.events.some((e) => e.event_id === seenId), "the event before the token must not come again");

    // 2. Nothing new after next_batch.
    const again = await rawSync({ since: full.next_batch });
    assert.equal(again.rooms?.join?.[roomId], undefined, `nothing new, yet got ${json(again.rooms?.join?.[roomId])}`);

    // 3. A small limit: the last 5, limited, the rename in "state" (it is in the gap), and
    //    prev_batch leads back through the gap to the event before the token, without overlap.
    const small = await rawSync({ since, filter: json({ room: { timeline: { limit: 5 } } }) });
    const stl = small.rooms?.join?.[roomId]?.timeline;
    assert.equal(stl?.limited, true, `limit 5 over 16 events must be limited: ${json(stl && { ...stl, events: stl.events.length })}`);
    assertSameSequence(stl.events.map((e) => e.event_id), sent.slice(-5), "the limited timeline");
    const state = small.rooms.join[roomId].state?.events ?? [];
    assert.ok(
        state.some((e) => e.type === "m.room.name" && e.content?.name === newName),
        `the rename happened in the gap, so it must be in the state section: ${json(state.map((e) => e.type))}`,
    );
    assert.equal(typeof stl.prev_batch, "string", "a limited timeline needs prev_batch");
    const back = [];
    let from = stl.prev_batch;
    for (let page = 0; page < 20 && !back.some((e) => e.event_id === seenId); page++) {
        const res = await bob.client.createMessagesRequest(roomId, from, 4, "b");
        back.push(...res.chunk);
        if (!res.end) break;
        from = res.end;
    }
    const gapIds = back.map((e) => e.event_id);
    const idxSeen = gapIds.indexOf(seenId);
    assert.ok(idxSeen >= 0, "paging back from prev_batch must reach the event seen before the stop");
    const gap = back.slice(0, idxSeen).reverse(); // oldest first
    assert.deepEqual(
        gap.map((e) => e.type),
        ["m.room.name", ...sent.slice(0, -5).map(() => "m.room.message")],
        "the gap between the token and the limited timeline",
    );
    assertSameSequence(
        gap.filter((e) => e.type === "m.room.message").map((e) => e.event_id),
        sent.slice(0, -5),
        "the gap's messages",
    );
});

test("restart: a new client over the saved sync store resumes from its token and misses nothing", opts, async () => {
    const alice = await newUser("resume-alice");
    const bob = await newUser("resume-bob");
    const roomId = await createRoom(alice, { preset: "private_chat", name: `resume ${tag()}` });
    await inviteAndJoin(roomId, alice, bob);

    // The filter the SDK stores and uses for every /sync after the initial one: at most 10
    // timeline events per room, so the 37 events below make the resumed sync limited.
    const saved = new sdk.SyncAccumulator();
    const { client: first, live: live1 } = await startPersisted(bob, saved, roomId, 10, { recordMessages: true, stubPushRules });
    const before = await sendMany(alice, roomId, 5, "before the stop");
    await until(() => live1.some((e) => e.id === before.at(-1).id), { what: "the messages before the stop" });
    // The store saves a response after the SDK has processed it.
    await until(() => saved.getNextBatchToken() === first.store.getSyncToken(), { what: "the store to catch up" });
    const token = saved.getNextBatchToken();
    first.stopClient();

    // More than the filter's timeline limit: the resumed sync is limited and the client has to
    // fill the gap from prev_batch.
    const during = await sendMany(alice, roomId, 35, "while stopped");
    const topic = `topic while stopped ${tag()}`;
    await alice.client.setRoomTopic(roomId, topic);
    const last = await sendText(alice, roomId, "last while stopped");
    const missed = [...during, { id: last, body: "last while stopped" }];

    // PREPARED comes from the saved sync already; the first /sync answer follows.
    const { client: second, live: live2 } = await startPersisted(bob, saved, roomId, 10, { recordMessages: true, stubPushRules });
    await until(() => second.rawLog.some((r) => r.kind === "sync"), { what: "the resumed client's first /sync" });
    const syncs = second.rawLog.filter((r) => r.kind === "sync");
    assert.equal(syncs[0].query.since, token, "the resumed client's first /sync must use the saved token");
    assert.ok(!syncs.some((r) => !r.query.since), "the resumed client must not do an initial sync");
    const resumed = syncs[0].body?.rooms?.join?.[roomId]?.timeline;
    assert.equal(resumed?.limited, true, `37 new events over a limit of 10 must come limited: ${json(resumed && { ...resumed, events: resumed.events.length })}`);
    assert.ok(resumed.events.length <= 10, `timeline limit 10, got ${resumed.events.length} events`);

    const room = second.getRoom(roomId);
    assert.ok(room, "the room must come back from the saved sync");
    await until(() => liveMessages(room).some((e) => e.id === last), { what: "the last message sent while stopped" });
    assert.equal(room.currentState.getStateEvents("m.room.topic", "")?.getContent().topic, topic, "topic set while stopped");

    // Fill the gap the way a client does: back-paginate the live timeline.
    for (let i = 0; i < 20 && !missed.every((m) => liveMessages(room).some((e) => e.id === m.id)); i++) {
        const more = await second.paginateEventTimeline(room.getLiveTimeline(), { backwards: true, limit: 10 });
        if (!more) break;
    }
    const got = liveMessages(room).filter((e) => missed.some((m) => m.id === e.id));
    assertSameSequence(got, missed, "messages sent while the client was stopped");

    // What the server sent to the resumed client: each missed event once, and nothing it had already
    // delivered before the stop except where pagination overlaps the saved timeline.
    const serverSync = rawSyncTimeline(second.rawLog, roomId);
    assertNoDuplicateEventIds(serverSync, "the resumed client's /sync timelines");
    assert.ok(
        !serverSync.some((e) => before.some((b) => b.id === e.event_id)),
        "the resumed /sync must not resend events from before the token",
    );
    const served = [...serverSync, ...second.rawLog.filter((r) => r.kind === "messages").flatMap((r) => r.body?.chunk ?? [])];
    for (const m of missed) {
        const n = served.filter((e) => e.event_id === m.id).length;
        assert.equal(n, 1, `${m.body} (${m.id}) was served ${n} times across /sync and /messages`);
    }
    // Live delivery still works after the resume.
    const fresh = await sendText(alice, roomId, "after the resume");
    await until(() => live2.some((e) => e.id === fresh), { what: "a live message after the resume" });
});

// ---------------------------------------------------------------------------
// Typing, receipts, presence (skipped while the server does not have them)

test("typing: bob sees alice typing (RoomMember.typing) and stop", opts, async (t) => {
    const alice = await newUser("typing-alice");
    const bob = await newUser("typing-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob);
    const bobSync = syncClient(bob);
    const typing = [];
    bobSync.on(RoomMemberEvent.Typing, (_ev, member) => {
        if (member.roomId === roomId && member.userId === alice.userId) typing.push(member.typing);
    });
    await startSyncing(bobSync);

    const ok = await unlessUnrecognized(
        t,
        () => alice.client.sendTyping(roomId, true, 20_000),
        "PUT /rooms/{roomId}/typing/{userId}",
    );
    if (!ok) return;
    await until(() => typing.includes(true), { what: () => `alice typing at bob (seen ${json(typing)})` });
    assert.equal(bobSync.getRoom(roomId).getMember(alice.userId).typing, true);

    await alice.client.sendTyping(roomId, false);
    await until(() => typing.at(-1) === false, { what: () => `alice stopped typing at bob (seen ${json(typing)})` });
    assert.equal(bobSync.getRoom(roomId).getMember(alice.userId).typing, false);
});

test("receipts: bob sees alice's read receipt (getReceiptsForEvent, getUsersReadUpTo)", opts, async (t) => {
    const alice = await newUser("rr-alice");
    const bob = await newUser("rr-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob);
    const aliceSync = syncClient(alice);
    const bobSync = syncClient(bob);
    await startSyncing(aliceSync);
    await startSyncing(bobSync);

    const msgId = await sendText(bob, roomId, "please read this");
    const aliceRoom = aliceSync.getRoom(roomId);
    const ev = await until(() => aliceRoom.findEventById(msgId), { what: "bob's message at alice" });
    const ok = await unlessUnrecognized(
        t,
        () => aliceSync.sendReadReceipt(ev),
        "POST /rooms/{roomId}/receipt/m.read/{eventId}",
    );
    if (!ok) return;

    const bobRoom = bobSync.getRoom(roomId);
    await until(
        () => {
            const bobEv = bobRoom.findEventById(msgId);
            return bobEv && bobRoom.getReceiptsForEvent(bobEv).some((r) => r.userId === alice.userId && r.type === "m.read");
        },
        { what: () => `alice's m.read receipt at bob (has ${json(bobRoom.getReceiptsForEvent(bobRoom.findEventById(msgId) ?? ev))})` },
    );
    const bobEv = bobRoom.findEventById(msgId);
    assert.ok(bobRoom.getUsersReadUpTo(bobEv).includes(alice.userId), `getUsersReadUpTo: ${json(bobRoom.getUsersReadUpTo(bobEv))}`);
    assert.equal(bobRoom.getEventReadUpTo(alice.userId), msgId, "getEventReadUpTo(alice)");
});

test("presence: bob sees alice's presence and status message (User.presence)", opts, async (t) => {
    const alice = await newUser("pres-alice");
    const bob = await newUser("pres-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, bob);
    const bobSync = syncClient(bob);
    await startSyncing(bobSync);

    const status = `busy ${tag()}`;
    const ok = await unlessUnrecognized(
        t,
        () => alice.client.setPresence({ presence: "unavailable", status_msg: status }),
        "PUT /presence/{userId}/status",
    );
    if (!ok) return;
    await until(
        () => {
            const u = bobSync.getUser(alice.userId);
            return u?.presence === "unavailable" && u.presenceStatusMsg === status;
        },
        {
            what: () => {
                const u = bobSync.getUser(alice.userId);
                return `alice unavailable "${status}" at bob (is ${u?.presence} ${json(u?.presenceStatusMsg)})`;
            },
        },
    );
});
