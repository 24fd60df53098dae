// Rooms, membership, messages, relations and history, driven through matrix-js-sdk.
//
// Run: HS_E2E_BASE_URL=http://127.0.0.1:18008 HS_E2E_SERVER_NAME=localhost \
//      node --test --test-force-exit --test-concurrency=1 rooms.test.mjs
//
// Written against the spec (client-server API v1.x). /sync is not used anywhere:
// everything goes through the SDK's REST methods (createRoom, joinRoom, invite, kick,
// ban, sendEvent, createMessagesRequest, fetchRoomEvent, fetchRelations, ...) and, for
// endpoints the SDK has no method for (/context, /threads, raw PUT /send), through
// client.http.authedRequest. No test calls startClient().
//
// Every test registers its own users (unique names), so tests are independent of
// each other and of earlier runs against the same server.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import {
    ClientPrefix,
    Method,
    SERVER_NAME,
    TEST_TIMEOUT_MS,
    expectMatrixError,
    loginDevice,
    makeClient,
    registerUser,
    requireServer,
    sdk,
    stopAllClients,
} from "./helpers.mjs";

// Fail the whole file at once, with a clear message, if no server is there.
await requireServer();

afterEach(() => stopAllClients());

const opts = { timeout: TEST_TIMEOUT_MS };

const enc = encodeURIComponent;
const tag = () => randomBytes(4).toString("hex");
const json = (v) => {
    try {
        return JSON.stringify(v);
    } catch {
        return String(v);
    }
};

// ---------------------------------------------------------------------------
// Users and clients

/**
 * A client that sends events straight to the server. The SDK's default
 * MatrixScheduler queues every m.room.message / relation of a client into one
 * FIFO (so "10 in flight" would really be 1) and silently retries failed sends
 * (which would hide a 5xx from the server). This scheduler queues nothing and
 * never retries.
 */
function directClient({ accessToken, userId, deviceId }) {
    return makeClient({
        accessToken,
        userId,
        deviceId,
        scheduler: new sdk.MatrixScheduler(
            () => -1, // never retry
            () => null, // never queue
        ),
    });
}

/** Registers a user (unique name) with a direct client; optionally sets a display name. */
async function newUser(prefix, { displayName } = {}) {
    const user = await registerUser({ prefix });
    user.client = directClient(user);
    if (displayName !== undefined) {
        await user.client.setDisplayName(displayName);
        user.displayName = displayName;
    }
    return user;
}

/** A second device (fresh login, fresh client) of `user`. */
async function newDevice(user) {
    const dev = await loginDevice(user);
    dev.client = directClient(dev);
    return dev;
}

// ---------------------------------------------------------------------------
// Rooms

async function createRoom(owner, options, what = "createRoom") {
    const res = await owner.client.createRoom(options);
    assert.equal(typeof res?.room_id, "string", `${what}: no room_id in ${json(res)}`);
    assert.match(res.room_id, /^![^:]+(:.+)?$/, `${what}: malformed room_id ${res.room_id}`);
    return res.room_id;
}

/** POST /join/{roomIdOrAlias} via the SDK; asserts the resolved room ID. */
async function join(user, roomIdOrAlias, expectedRoomId = roomIdOrAlias) {
    const room = await user.client.joinRoom(roomIdOrAlias);
    assert.equal(room?.roomId, expectedRoomId, `${user.userId} joining ${roomIdOrAlias}: wrong room`);
    return room;
}

/** Invites (if `inviter` is given) and joins each user. */
async function inviteAndJoin(roomId, inviter, users) {
    for (const u of users) {
        if (inviter) await inviter.client.invite(roomId, u.userId);
        await join(u, roomId);
    }
}

/** GET /rooms/{id}/members -> chunk of m.room.member events. */
async function memberEvents(client, roomId, { membership, notMembership } = {}) {
    const res = await client.members(roomId, membership, notMembership);
    assert.ok(Array.isArray(res?.chunk), `GET /members: no chunk array in ${json(res)}`);
    for (const ev of res.chunk) {
        assert.equal(ev.type, "m.room.member", `GET /members returned a ${ev.type} event`);
        assert.equal(typeof ev.state_key, "string", `GET /members: member event without state_key ${json(ev)}`);
    }
    return res.chunk;
}

function membershipIn(chunk, userId) {
    return chunk.find((e) => e.state_key === userId)?.content?.membership;
}

async function currentMembership(client, roomId, userId) {
    return (await client.getStateEvent(roomId, "m.room.member", userId))?.membership;
}

/**
 * m.room.guest_access of a room; an absent event means "forbidden" (spec, m.room.guest_access),
 * so a server may leave it out where the preset asks for "forbidden".
 */
async function guestAccess(client, roomId) {
    try {
        return (await client.getStateEvent(roomId, "m.room.guest_access", "")).guest_access;
    } catch (err) {
        if (err instanceof sdk.MatrixError && err.httpStatus === 404 && err.errcode === "M_NOT_FOUND") return "forbidden";
        throw err;
    }
}

async function joinedRoomIds(client) {
    const res = await client.getJoinedRooms();
    assert.ok(Array.isArray(res?.joined_rooms), `GET /joined_rooms: no joined_rooms array in ${json(res)}`);
    return res.joined_rooms;
}

async function joinedMembers(client, roomId) {
    const res = await client.getJoinedRoomMembers(roomId);
    assert.equal(typeof res?.joined, "object", `GET /joined_members: no joined object in ${json(res)}`);
    return res.joined;
}

// ---------------------------------------------------------------------------
// Events

function assertEventId(id, what) {
    assert.equal(typeof id, "string", `${what}: event_id must be a string, got ${json(id)}`);
    assert.match(id, /^\$/, `${what}: malformed event_id ${id}`);
}

/** Basic ClientEvent shape (definitions/client_event.yaml). */
function assertClientEvent(ev, roomId, what) {
    assertEventId(ev?.event_id, `${what}: event ${json(ev)}`);
    assert.equal(typeof ev.type, "string", `${what}: event without type ${json(ev)}`);
    assert.equal(typeof ev.sender, "string", `${what}: event without sender ${json(ev)}`);
    assert.equal(typeof ev.origin_server_ts, "number", `${what}: event without origin_server_ts ${json(ev)}`);
    assert.equal(typeof ev.content, "object", `${what}: event without content ${json(ev)}`);
    if (roomId !== undefined) assert.equal(ev.room_id, roomId, `${what}: event with wrong room_id ${json(ev)}`);
}

/** Sends an m.text message through the SDK (PUT /send with an SDK-made txnId). */
async function sendText(user, roomId, body, extra = {}) {
    const res = await user.client.sendMessage(roomId, { msgtype: "m.text", body, ...extra });
    assertEventId(res?.event_id, `send "${body}"`);
    return res.event_id;
}

/** Sends any event through the SDK. */
async function sendEvent(user, roomId, type, content, txnId) {
    const res = await user.client.sendEvent(roomId, type, content, txnId);
    assertEventId(res?.event_id, `send ${type} ${json(content)}`);
    return res.event_id;
}

/** Raw PUT /rooms/{roomId}/send/{type}/{txnId}. */
function putSend(client, roomId, type, txnId, content) {
    return client.http.authedRequest(
        Method.Put,
        `/rooms/${enc(roomId)}/send/${enc(type)}/${enc(txnId)}`,
        undefined,
        content,
    );
}

const isMessage = (e) => e.type === "m.room.message";

/**
 * Follows GET /rooms/{id}/messages from `from` (none: the latest event for dir=b,
 * the first visible event for dir=f) until the response has no `end` (spec:
 * an empty chunk does not mean the end; a missing `end` does). Returns every
 * event in the order received, and the pages.
 */
async function paginate(client, roomId, { dir = "b", limit = 50, from = null, maxPages = 3000, what = "" } = {}) {
    const label = `GET /messages dir=${dir} limit=${limit}${what ? ` (${what})` : ""}`;
    const events = [];
    const pages = [];
    let token = from;
    for (let page = 0; ; page++) {
        assert.ok(page < maxPages, `${label}: still not finished after ${maxPages} pages`);
        const res = await client.createMessagesRequest(roomId, token, limit, dir);
        assert.ok(Array.isArray(res?.chunk), `${label}: no chunk array in ${json(res)}`);
        assert.equal(typeof res.start, "string", `${label}: no start token in ${json(res)}`);
        assert.ok(
            res.chunk.length <= limit,
            `${label}: ${res.chunk.length} events returned for limit=${limit} (page ${page})`,
        );
        assert.ok(
            res.end === undefined || typeof res.end === "string",
            `${label}: end must be a string or absent, got ${json(res.end)}`,
        );
        for (const ev of res.chunk) assertClientEvent(ev, roomId, label);
        events.push(...res.chunk);
        pages.push({ from: token, ...res });
        if (res.end === undefined) break;
        assert.ok(
            !(res.chunk.length === 0 && res.end === token),
            `${label}: empty chunk with end === from (${token}) would loop forever; the spec says to omit ` +
                `end when there is nothing more`,
        );
        token = res.end;
    }
    return { events, pages };
}

function assertNoDuplicateIds(events, what) {
    const seen = new Map();
    for (const [i, ev] of events.entries()) {
        assert.ok(
            !seen.has(ev.event_id),
            `${what}: ${ev.event_id} (${ev.type} ${json(ev.content?.body)}) returned twice, at positions ${seen.get(ev.event_id)} and ${i}`,
        );
        seen.set(ev.event_id, i);
    }
}

const ids = (events) => events.map((e) => e.event_id);

// ---------------------------------------------------------------------------
// Relations

/** GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]], all pages. */
async function collectRelations(client, roomId, eventId, relType = null, eventType = null, { dir = "b", limit } = {}) {
    const label = `GET /relations/${eventId}${relType ? "/" + relType : ""}${eventType ? "/" + eventType : ""} dir=${dir}`;
    const chunk = [];
    let from;
    for (let page = 0; ; page++) {
        assert.ok(page < 200, `${label}: still not finished after 200 pages`);
        const query = { dir };
        if (limit !== undefined) query.limit = limit;
        if (from !== undefined) query.from = from;
        const res = await client.fetchRelations(roomId, eventId, relType, eventType, query);
        assert.ok(Array.isArray(res?.chunk), `${label}: no chunk array in ${json(res)}`);
        if (limit !== undefined) {
            assert.ok(res.chunk.length <= limit, `${label}: ${res.chunk.length} events for limit=${limit}`);
        }
        for (const ev of res.chunk) assertClientEvent(ev, roomId, label);
        chunk.push(...res.chunk);
        if (res.next_batch === undefined || res.next_batch === null) break;
        assert.notEqual(res.next_batch, from, `${label}: next_batch did not move`);
        from = res.next_batch;
    }
    assertNoDuplicateIds(chunk, label);
    return chunk;
}

/** GET /_matrix/client/v1/rooms/{roomId}/threads, all pages. */
async function collectThreads(client, roomId, { include, limit } = {}) {
    const chunk = [];
    let from;
    for (let page = 0; ; page++) {
        assert.ok(page < 200, "GET /threads: still not finished after 200 pages");
        const query = {};
        if (include) query.include = include;
        if (limit !== undefined) query.limit = String(limit);
        if (from !== undefined) query.from = from;
        const res = await client.http.authedRequest(Method.Get, `/rooms/${enc(roomId)}/threads`, query, undefined, {
            prefix: ClientPrefix.V1,
        });
        assert.ok(Array.isArray(res?.chunk), `GET /threads: no chunk array in ${json(res)}`);
        for (const ev of res.chunk) assertClientEvent(ev, roomId, "GET /threads");
        chunk.push(...res.chunk);
        if (res.next_batch === undefined || res.next_batch === null) break;
        assert.notEqual(res.next_batch, from, "GET /threads: next_batch did not move");
        from = res.next_batch;
    }
    assertNoDuplicateIds(chunk, "GET /threads");
    return chunk;
}

function getContext(client, roomId, eventId, limit) {
    return client.http.authedRequest(Method.Get, `/rooms/${enc(roomId)}/context/${enc(eventId)}`, {
        limit: String(limit),
    });
}

const editContent = (targetId, text) => ({
    msgtype: "m.text",
    body: `* ${text}`,
    "m.new_content": { msgtype: "m.text", body: text },
    "m.relates_to": { rel_type: "m.replace", event_id: targetId },
});

const reactionContent = (targetId, key) => ({
    "m.relates_to": { rel_type: "m.annotation", event_id: targetId, key },
});

const threadContent = (rootId, body, inReplyTo) => ({
    msgtype: "m.text",
    body,
    "m.relates_to": {
        rel_type: "m.thread",
        event_id: rootId,
        is_falling_back: true,
        "m.in_reply_to": { event_id: inReplyTo },
    },
});

/** Asserts that `userId` has the creator's power (trusted_private_chat). */
async function assertCreatorPower(client, roomId, creatorId, userId, what) {
    const create = await client.getStateEvent(roomId, "m.room.create", "");
    const version = String(create.room_version ?? "1");
    if (/^\d+$/.test(version) && Number(version) >= 12) {
        // v12+: creators have infinite power and are listed in additional_creators.
        assert.ok(
            Array.isArray(create.additional_creators) && create.additional_creators.includes(userId),
            `${what}: room v${version}: invitee ${userId} should be in additional_creators: ${json(create)}`,
        );
    } else {
        const pl = await client.getStateEvent(roomId, "m.room.power_levels", "");
        assert.ok((pl.users?.[creatorId] ?? 0) >= 100, `${what}: creator is not at 100: ${json(pl)}`);
        assert.equal(
            pl.users?.[userId],
            pl.users?.[creatorId],
            `${what}: invitee must have the creator's power level: ${json(pl)}`,
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Direct message

test("DM: is_direct invite (trusted_private_chat), join, m.direct on both sides, messages both ways in order", opts, async () => {
    const alice = await newUser("dm-alice", { displayName: `Alice ${tag()}` });
    const bob = await newUser("dm-bob", { displayName: `Bob ${tag()}` });

    const roomId = await createRoom(alice, {
        preset: "trusted_private_chat",
        is_direct: true,
        invite: [bob.userId],
    });

    // Alice is in; Bob is only invited.
    assert.ok((await joinedRoomIds(alice.client)).includes(roomId), "creator must be joined to the DM");
    assert.ok(
        !(await joinedRoomIds(bob.client)).includes(roomId),
        "an invitee must not be listed in /joined_rooms before joining",
    );
    await expectMatrixError(
        () => bob.client.roomState(roomId),
        { status: 403, errcode: "M_FORBIDDEN" },
        "GET /rooms/{id}/state as a not-yet-joined invitee",
    );

    // Alice's view: Bob's invite carries is_direct (server MUST set it for createRoom invites).
    const members = await memberEvents(alice.client, roomId);
    assert.equal(membershipIn(members, alice.userId), "join", `creator membership in ${json(members)}`);
    const invite = members.find((e) => e.state_key === bob.userId);
    assert.ok(invite, `no member event for ${bob.userId} in ${json(members)}`);
    assert.equal(invite.content.membership, "invite", `bob's membership: ${json(invite)}`);
    assert.equal(invite.content.is_direct, true, `is_direct must be set on the createRoom invite: ${json(invite)}`);
    assert.equal(invite.sender, alice.userId, "the invite's sender");
    const inviteState = await alice.client.getStateEvent(roomId, "m.room.member", bob.userId);
    assert.equal(inviteState.membership, "invite");
    assert.equal(inviteState.is_direct, true, `GET /state/m.room.member/{bob}: ${json(inviteState)}`);

    // What the preset implies.
    assert.equal((await alice.client.getStateEvent(roomId, "m.room.join_rules", "")).join_rule, "invite");
    assert.equal(
        (await alice.client.getStateEvent(roomId, "m.room.history_visibility", "")).history_visibility,
        "shared",
    );
    assert.equal((await alice.client.getStateEvent(roomId, "m.room.guest_access", "")).guest_access, "can_join");
    await assertCreatorPower(alice.client, roomId, alice.userId, bob.userId, "trusted_private_chat");
    assert.deepEqual(Object.keys(await joinedMembers(alice.client, roomId)), [alice.userId]);

    // Bob accepts.
    await join(bob, roomId);
    assert.ok((await joinedRoomIds(bob.client)).includes(roomId), "joined room missing from bob's /joined_rooms");
    assert.equal(await currentMembership(alice.client, roomId, bob.userId), "join");
    const joined = await joinedMembers(bob.client, roomId);
    assert.deepEqual(Object.keys(joined).sort(), [alice.userId, bob.userId].sort(), `joined_members: ${json(joined)}`);
    assert.equal(joined[alice.userId].display_name, alice.displayName);
    assert.equal(joined[bob.userId].display_name, bob.displayName);

    // Both sides record the DM in m.direct.
    await alice.client.setAccountData("m.direct", { [bob.userId]: [roomId] });
    await bob.client.setAccountData("m.direct", { [alice.userId]: [roomId] });
    assert.deepEqual(await alice.client.getAccountDataFromServer("m.direct"), { [bob.userId]: [roomId] });
    assert.deepEqual(await bob.client.getAccountDataFromServer("m.direct"), { [alice.userId]: [roomId] });

    // Messages both ways.
    const sent = [];
    for (const [i, who] of [alice, bob, alice, bob, bob, alice].entries()) {
        const body = `dm ${i} from ${who === alice ? "alice" : "bob"}`;
        sent.push({ id: await sendText(who, roomId, body), body, sender: who.userId });
    }
    assert.equal(new Set(sent.map((s) => s.id)).size, sent.length, "each send must create a new event");

    for (const viewer of [alice, bob]) {
        const back = await paginate(viewer.client, roomId, { dir: "b", limit: 4, what: viewer.userId });
        assertNoDuplicateIds(back.events, "DM backwards");
        const msgs = back.events.filter(isMessage).reverse();
        assert.deepEqual(
            msgs.map((e) => ({ id: e.event_id, body: e.content.body, sender: e.sender })),
            sent,
            `${viewer.userId}: messages read back with dir=b (reversed) must be what was sent, in order`,
        );
        assert.equal(back.events.at(-1).type, "m.room.create", "backwards pagination must end at m.room.create");

        const fwd = await paginate(viewer.client, roomId, { dir: "f", limit: 3, what: viewer.userId });
        assert.deepEqual(ids(fwd.events), ids(back.events).reverse(), "dir=f from the start must be the reverse of dir=b");
    }

    // After joining, Bob can see the invite he got, with is_direct, in the room history.
    const { events: history } = await paginate(bob.client, roomId, { dir: "b", limit: 50 });
    const inviteEv = history.find(
        (e) => e.type === "m.room.member" && e.state_key === bob.userId && e.content?.membership === "invite",
    );
    assert.ok(inviteEv, `bob's invite is missing from his /messages: ${json(history.map((e) => e.type))}`);
    assert.equal(inviteEv.content.is_direct, true);
});

// ---------------------------------------------------------------------------
// 2. Group

/** POST /publicRooms with a search term, following next_batch, until `roomId` shows up. */
async function findPublicRoom(client, roomId, term) {
    let since;
    for (let page = 0; page < 50; page++) {
        const res = await client.publicRooms({ limit: 20, since, filter: { generic_search_term: term } });
        assert.ok(Array.isArray(res?.chunk), `POST /publicRooms: no chunk array in ${json(res)}`);
        const hit = res.chunk.find((r) => r.room_id === roomId);
        if (hit) return hit;
        if (!res.next_batch) break;
        since = res.next_batch;
    }
    assert.fail(`room ${roomId} (visibility public) not found in /publicRooms searching for ${json(term)}`);
}

test("group: public_chat with room_alias_name, 3 users join by alias, names/topics, /state, /joined_members, directory", opts, async () => {
    const t = tag();
    const alice = await newUser("grp-alice", { displayName: `Alice ${t}` });
    const bob = await newUser("grp-bob", { displayName: `Bob ${t}` });
    const carol = await newUser("grp-carol", { displayName: `Carol ${t}` });

    const aliasLocal = `e2e-grp-${t}-${Date.now().toString(36)}`;
    const alias = `#${aliasLocal}:${SERVER_NAME}`;
    const name = `E2E group ${t}`;
    const topic = `Everything about ${t}`;
    const roomId = await createRoom(alice, {
        preset: "public_chat",
        room_alias_name: aliasLocal,
        name,
        topic,
        visibility: "public",
    });

    try {
        // The alias resolves and is the canonical alias.
        const resolved = await bob.client.getRoomIdForAlias(alias);
        assert.equal(resolved.room_id, roomId, `GET /directory/room/${alias}: ${json(resolved)}`);
        assert.ok(
            Array.isArray(resolved.servers) && resolved.servers.includes(SERVER_NAME),
            `GET /directory/room: servers must list ${SERVER_NAME}: ${json(resolved)}`,
        );
        assert.equal((await alice.client.getStateEvent(roomId, "m.room.canonical_alias", "")).alias, alias);

        // public_chat preset.
        assert.equal((await alice.client.getStateEvent(roomId, "m.room.join_rules", "")).join_rule, "public");
        assert.equal(
            (await alice.client.getStateEvent(roomId, "m.room.history_visibility", "")).history_visibility,
            "shared",
        );
        assert.equal(await guestAccess(alice.client, roomId), "forbidden", "public_chat guest_access");

        // Join by alias (no invite needed).
        await join(bob, alias, roomId);
        await join(carol, alias, roomId);

        // name/topic from createRoom, read back by everyone.
        for (const u of [alice, bob, carol]) {
            assert.equal((await u.client.getStateEvent(roomId, "m.room.name", "")).name, name, `name as ${u.userId}`);
            assert.equal((await u.client.getStateEvent(roomId, "m.room.topic", "")).topic, topic, `topic as ${u.userId}`);
        }

        // A plain member (power 0 < state_default 50) cannot change them.
        await expectMatrixError(
            () => bob.client.setRoomName(roomId, "hijacked"),
            { status: 403, errcode: "M_FORBIDDEN" },
            "setRoomName by a power-0 member",
        );
        await expectMatrixError(
            () => bob.client.setRoomTopic(roomId, "hijacked"),
            { status: 403, errcode: "M_FORBIDDEN" },
            "setRoomTopic by a power-0 member",
        );

        // The creator changes both.
        const name2 = `${name} (renamed)`;
        const topic2 = `${topic} (new)`;
        const nameRes = await alice.client.setRoomName(roomId, name2);
        const topicRes = await alice.client.setRoomTopic(roomId, topic2);
        assertEventId(nameRes?.event_id, "PUT m.room.name");
        assertEventId(topicRes?.event_id, "PUT m.room.topic");
        for (const u of [bob, carol]) {
            assert.equal((await u.client.getStateEvent(roomId, "m.room.name", "")).name, name2, `new name as ${u.userId}`);
            assert.equal((await u.client.getStateEvent(roomId, "m.room.topic", "")).topic, topic2, `new topic as ${u.userId}`);
        }

        // GET /state: the full current state, one event per (type, state_key).
        const state = await bob.client.roomState(roomId);
        assert.ok(Array.isArray(state), `GET /state must return an array: ${json(state)}`);
        for (const ev of state) {
            assertClientEvent(ev, roomId, "GET /state");
            assert.equal(typeof ev.state_key, "string", `GET /state: event without state_key ${json(ev)}`);
        }
        const byKey = new Map(state.map((e) => [`${e.type}|${e.state_key}`, e]));
        assert.equal(byKey.size, state.length, "GET /state: two events with the same (type, state_key)");
        const s = (type, key = "") => byKey.get(`${type}|${key}`);
        assert.equal(s("m.room.create")?.sender, alice.userId, "m.room.create in /state");
        assert.ok(s("m.room.power_levels"), "m.room.power_levels in /state");
        assert.equal(s("m.room.join_rules")?.content.join_rule, "public");
        assert.equal(s("m.room.history_visibility")?.content.history_visibility, "shared");
        assert.equal(s("m.room.canonical_alias")?.content.alias, alias);
        assert.equal(s("m.room.name")?.content.name, name2);
        assert.equal(s("m.room.name")?.event_id, nameRes.event_id, "/state must hold the latest m.room.name event");
        assert.equal(s("m.room.topic")?.content.topic, topic2);
        assert.equal(s("m.room.topic")?.event_id, topicRes.event_id, "/state must hold the latest m.room.topic event");
        for (const u of [alice, bob, carol]) {
            const m = s("m.room.member", u.userId);
            assert.equal(m?.content.membership, "join", `${u.userId} membership in /state: ${json(m)}`);
            assert.equal(m.content.displayname, u.displayName, `${u.userId} displayname in their member event`);
        }

        // /joined_members: exactly the three, with display names.
        const joined = await joinedMembers(carol.client, roomId);
        assert.deepEqual(
            Object.keys(joined).sort(),
            [alice.userId, bob.userId, carol.userId].sort(),
            `joined_members: ${json(joined)}`,
        );
        for (const u of [alice, bob, carol]) {
            assert.equal(joined[u.userId].display_name, u.displayName, `display_name of ${u.userId}`);
        }
        for (const u of [alice, bob, carol]) {
            assert.ok((await joinedRoomIds(u.client)).includes(roomId), `${u.userId}: room missing from /joined_rooms`);
        }

        // Published with visibility:public: it is in the public room directory.
        const entry = await findPublicRoom(bob.client, roomId, t);
        assert.equal(entry.num_joined_members, 3, `publicRooms entry: ${json(entry)}`);
        assert.equal(entry.name, name2, `publicRooms entry name: ${json(entry)}`);
        assert.equal(entry.topic, topic2, `publicRooms entry topic: ${json(entry)}`);
        assert.equal(entry.canonical_alias, alias, `publicRooms entry canonical_alias: ${json(entry)}`);
        assert.equal(entry.world_readable, false);
        assert.equal(entry.guest_can_join, false);
        if (entry.join_rule !== undefined) assert.equal(entry.join_rule, "public");

        // A second alias with PUT /directory/room/{alias}.
        const alias2 = `#e2e-grp2-${t}-${Date.now().toString(36)}:${SERVER_NAME}`;
        assert.deepEqual(await alice.client.createAlias(alias2, roomId), {});
        assert.equal((await carol.client.getRoomIdForAlias(alias2)).room_id, roomId);
        await expectMatrixError(
            () => carol.client.createAlias(alias2, roomId),
            { status: 409 },
            "PUT /directory/room with an alias that already exists",
        );
        const local = (await alice.client.getLocalAliases(roomId)).aliases;
        assert.ok(local.includes(alias) && local.includes(alias2), `GET /rooms/{id}/aliases: ${json(local)}`);
        await alice.client.deleteAlias(alias2);
        await expectMatrixError(
            () => bob.client.getRoomIdForAlias(alias2),
            { status: 404, errcode: "M_NOT_FOUND" },
            "resolving a deleted alias",
        );
        await expectMatrixError(
            () => bob.client.getRoomIdForAlias(`#e2e-no-such-${t}:${SERVER_NAME}`),
            { status: 404, errcode: "M_NOT_FOUND" },
            "resolving an unknown alias",
        );
    } finally {
        // Keep the shared public directory small across reruns.
        await alice.client.setRoomDirectoryVisibility(roomId, "private").catch(() => {});
    }
});

// ---------------------------------------------------------------------------
// 3. Edits, reactions, thread

test("relations: edits, reactions and a thread; /relations, /threads, /context and bundled aggregations", opts, async () => {
    const alice = await newUser("rel-alice");
    const bob = await newUser("rel-bob");
    const carol = await newUser("rel-carol");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, [bob, carol]);

    const rootId = await sendText(alice, roomId, "original text");

    // Two edits of the root.
    const edit1 = await sendEvent(alice, roomId, "m.room.message", editContent(rootId, "edited once"));
    const edit2 = await sendEvent(alice, roomId, "m.room.message", editContent(rootId, "edited twice"));

    // Reactions from two users (and a second key).
    const reactA = await sendEvent(alice, roomId, "m.reaction", reactionContent(rootId, "👍"));
    const reactB = await sendEvent(bob, roomId, "m.reaction", reactionContent(rootId, "👍"));
    const reactB2 = await sendEvent(bob, roomId, "m.reaction", reactionContent(rootId, "🎉"));

    // A thread of three replies on the same root.
    const t1 = await sendEvent(bob, roomId, "m.room.message", threadContent(rootId, "thread 1", rootId));
    const t2 = await sendEvent(alice, roomId, "m.room.message", threadContent(rootId, "thread 2", t1));
    const t3 = await sendEvent(bob, roomId, "m.room.message", threadContent(rootId, "thread 3", t2));

    const children = [edit1, edit2, reactA, reactB, reactB2, t1, t2, t3]; // in sending order

    // GET /relations/{root}: every child, most recent first (dir=b default), across pages of 3.
    const all = await collectRelations(bob.client, roomId, rootId, null, null, { limit: 3 });
    assert.deepEqual(ids(all), [...children].reverse(), "GET /relations/{root} (limit=3): all children, newest first");
    const allOnePage = await collectRelations(bob.client, roomId, rootId);
    assert.deepEqual(ids(allOnePage), [...children].reverse(), "GET /relations/{root} (default limit)");
    const allFwd = await collectRelations(bob.client, roomId, rootId, null, null, { dir: "f", limit: 2 });
    assert.deepEqual(ids(allFwd), children, "GET /relations/{root}?dir=f: oldest first");

    // Filtered by rel_type and event type.
    const rel = (relType, eventType = null) => collectRelations(carol.client, roomId, rootId, relType, eventType);
    assert.deepEqual(ids(await rel("m.replace")), [edit2, edit1], "relations m.replace");
    assert.deepEqual(ids(await rel("m.annotation")), [reactB2, reactB, reactA], "relations m.annotation");
    assert.deepEqual(ids(await rel("m.annotation", "m.reaction")), [reactB2, reactB, reactA], "m.annotation/m.reaction");
    const threadRel = await rel("m.thread");
    assert.deepEqual(ids(threadRel), [t3, t2, t1], "relations m.thread: the 3 replies, newest first");
    assert.deepEqual(
        threadRel.map((e) => e.content.body),
        ["thread 3", "thread 2", "thread 1"],
    );
    for (const ev of threadRel) {
        assert.equal(ev.content["m.relates_to"]?.rel_type, "m.thread");
        assert.equal(ev.content["m.relates_to"]?.event_id, rootId);
    }
    assert.deepEqual(ids(await rel("m.thread", "m.room.message")), [t3, t2, t1], "m.thread/m.room.message");
    assert.deepEqual(ids(await rel("m.thread", "m.reaction")), [], "m.thread/m.reaction must be empty");
    const reactions = await rel("m.annotation");
    assert.deepEqual(
        reactions.map((e) => [e.sender, e.content["m.relates_to"].key]),
        [
            [bob.userId, "🎉"],
            [bob.userId, "👍"],
            [alice.userId, "👍"],
        ],
    );

    // /relations of an unknown event: 404.
    await expectMatrixError(
        () => bob.client.fetchRelations(roomId, `$e2e-unknown-${tag()}`, null, null, { dir: "b" }),
        { status: 404 },
        "GET /relations of an event that does not exist",
    );

    // The latest edit, by the spec's rule (origin_server_ts, then largest event_id).
    const e1 = await bob.client.fetchRoomEvent(roomId, edit1);
    const e2 = await bob.client.fetchRoomEvent(roomId, edit2);
    const latestEdit =
        e2.origin_server_ts > e1.origin_server_ts ||
        (e2.origin_server_ts === e1.origin_server_ts && edit2 > edit1)
            ? e2
            : e1;

    const assertBundled = (ev, viewerParticipated, where) => {
        const relations = ev?.unsigned?.["m.relations"];
        assert.ok(relations, `${where}: the root must carry unsigned["m.relations"]: ${json(ev)}`);
        const thread = relations["m.thread"];
        assert.ok(thread, `${where}: no m.thread aggregation in ${json(relations)}`);
        assert.equal(thread.count, 3, `${where}: m.thread count: ${json(thread)}`);
        assert.equal(thread.latest_event?.event_id, t3, `${where}: m.thread latest_event: ${json(thread)}`);
        assert.equal(thread.latest_event?.content?.body, "thread 3", `${where}: latest_event content`);
        assert.equal(
            thread.current_user_participated,
            viewerParticipated,
            `${where}: m.thread current_user_participated: ${json(thread)}`,
        );
        const replace = relations["m.replace"];
        assert.ok(replace, `${where}: no m.replace aggregation (the latest edit) in ${json(relations)}`);
        assert.equal(replace.event_id, latestEdit.event_id, `${where}: m.replace must be the most recent edit`);
        assert.deepEqual(replace.content?.["m.new_content"], latestEdit.content["m.new_content"]);
        assert.equal(relations["m.annotation"], undefined, `${where}: m.annotation is not aggregated by the server`);
        // The server must not replace the original content with the edit.
        assert.equal(ev.content.body, "original text", `${where}: the root's content must be left intact`);
    };

    // GET /event/{root}: bob replied in the thread, carol did not.
    assertBundled(await bob.client.fetchRoomEvent(roomId, rootId), true, "GET /event as bob");
    assertBundled(await carol.client.fetchRoomEvent(roomId, rootId), false, "GET /event as carol");
    // Alice sent the root, so she participated.
    assertBundled(await alice.client.fetchRoomEvent(roomId, rootId), true, "GET /event as alice");

    // GET /threads: the root is the room's only thread.
    const threads = await collectThreads(carol.client, roomId);
    assert.deepEqual(ids(threads), [rootId], `GET /threads: ${json(ids(threads))}`);
    assertBundled(threads[0], false, "GET /threads as carol");
    assert.deepEqual(ids(await collectThreads(alice.client, roomId, { include: "participated" })), [rootId]);
    assert.deepEqual(ids(await collectThreads(carol.client, roomId, { include: "participated" })), []);

    // /messages: the children are in the main timeline too, and the root is bundled there.
    const timeline = (await paginate(carol.client, roomId, { dir: "f", limit: 50 })).events;
    const tIds = ids(timeline);
    const rootIdx = tIds.indexOf(rootId);
    assert.ok(rootIdx >= 0, "root missing from /messages");
    assert.deepEqual(tIds.slice(rootIdx), [rootId, ...children], "/messages after the root");
    assertBundled(timeline[rootIdx], false, "GET /messages as carol");

    // GET /context/{root}: surrounding events, consistent with /messages, tokens with no gap.
    const ctx = await carol.client.http.authedRequest(
        Method.Get,
        `/rooms/${enc(roomId)}/context/${enc(rootId)}`,
        { limit: "4" },
    );
    assert.equal(ctx.event?.event_id, rootId, `/context: event ${json(ctx.event)}`);
    assertBundled(ctx.event, false, "GET /context as carol");
    assert.ok(Array.isArray(ctx.events_before) && Array.isArray(ctx.events_after), `/context: ${json(ctx)}`);
    assert.ok(ctx.events_before.length + ctx.events_after.length <= 4, "/context: limit applies to the sum");
    assert.deepEqual(
        ids(ctx.events_after),
        tIds.slice(rootIdx + 1, rootIdx + 1 + ctx.events_after.length),
        "/context events_after: chronological, right after the event",
    );
    assert.deepEqual(
        ids(ctx.events_before),
        tIds.slice(rootIdx - ctx.events_before.length, rootIdx).reverse(),
        "/context events_before: reverse-chronological, right before the event",
    );
    assert.equal(typeof ctx.start, "string", "/context: start token");
    assert.equal(typeof ctx.end, "string", "/context: end token");
    const afterCtx = await carol.client.createMessagesRequest(roomId, ctx.end, 2, "f");
    const nextIdx = rootIdx + 1 + ctx.events_after.length;
    assert.deepEqual(ids(afterCtx.chunk), tIds.slice(nextIdx, nextIdx + 2), "/messages dir=f from /context end");
    const beforeCtx = await carol.client.createMessagesRequest(roomId, ctx.start, 2, "b");
    const prevIdx = rootIdx - ctx.events_before.length;
    assert.deepEqual(
        ids(beforeCtx.chunk),
        tIds.slice(Math.max(0, prevIdx - 2), prevIdx).reverse(),
        "/messages dir=b from /context start",
    );

    // Last (they add no events if the server behaves): SHOULD-level validation from the spec.
    // A second identical annotation (same sender, type, key) is refused.
    await expectMatrixError(
        () => sendEvent(bob, roomId, "m.reaction", reactionContent(rootId, "👍")),
        { status: 400, errcode: "M_DUPLICATE_ANNOTATION" },
        "a duplicate 👍 from the same user",
    );
    // A thread cannot be rooted at an event that itself has a relation (400 M_UNKNOWN per spec).
    await expectMatrixError(
        () => sendEvent(bob, roomId, "m.room.message", threadContent(edit1, "thread off an edit", edit1)),
        { status: 400 },
        "starting a thread on an event with m.relates_to",
    );
});

// ---------------------------------------------------------------------------
// 4. Leave, kick, ban

test("membership: a member leaves; a kicked member stops receiving; a banned member cannot rejoin until unbanned", opts, async (t) => {
    const alice = await newUser("mod-alice");
    const bob = await newUser("mod-bob"); // kicked
    const carol = await newUser("mod-carol"); // leaves
    const dave = await newUser("mod-dave"); // banned
    const roomId = await createRoom(alice, { preset: "public_chat" });
    for (const u of [bob, carol, dave]) await join(u, roomId);
    const everyone = [alice, bob, carol, dave].map((u) => u.userId).sort();
    assert.deepEqual(Object.keys(await joinedMembers(alice.client, roomId)).sort(), everyone);

    // --- Carol leaves.
    assert.deepEqual(await carol.client.leave(roomId), {});
    let members = await memberEvents(alice.client, roomId);
    assert.equal(membershipIn(members, carol.userId), "leave", `after leave: ${json(members)}`);
    assert.equal(members.find((e) => e.state_key === carol.userId).sender, carol.userId);
    assert.ok(!(await joinedRoomIds(carol.client)).includes(roomId), "left room still in carol's /joined_rooms");
    assert.ok(!(carol.userId in (await joinedMembers(alice.client, roomId))), "carol still in /joined_members");
    // ?membership= / ?not_membership= filters.
    assert.deepEqual(
        (await memberEvents(alice.client, roomId, { membership: "leave" })).map((e) => e.state_key),
        [carol.userId],
        "GET /members?membership=leave",
    );
    assert.deepEqual(
        (await memberEvents(alice.client, roomId, { notMembership: "leave" })).map((e) => e.state_key).sort(),
        [alice.userId, bob.userId, dave.userId].sort(),
        "GET /members?not_membership=leave",
    );

    // --- Bob is kicked.
    const beforeKick = await sendText(alice, roomId, "before the kick");
    assert.deepEqual(await alice.client.kick(roomId, bob.userId, "e2e kick"), {});
    const kicked = await alice.client.getStateEvent(roomId, "m.room.member", bob.userId);
    assert.equal(kicked.membership, "leave", `kicked member event: ${json(kicked)}`);
    assert.equal(kicked.reason, "e2e kick");
    members = await memberEvents(alice.client, roomId);
    assert.equal(members.find((e) => e.state_key === bob.userId)?.sender, alice.userId, "the kick's sender");
    assert.ok(!(await joinedRoomIds(bob.client)).includes(roomId), "kicked room still in bob's /joined_rooms");

    const afterKick = await sendText(alice, roomId, "after the kick: bob must not see this");
    // Bob may get 403, or history up to the kick; never the new message.
    let bobView;
    try {
        bobView = (await paginate(bob.client, roomId, { dir: "b", limit: 10, what: "kicked bob" })).events;
    } catch (err) {
        if (!(err instanceof sdk.MatrixError)) throw err;
        assert.equal(err.httpStatus, 403, `kicked member's /messages: ${err.httpStatus} ${json(err.data)}`);
        assert.equal(err.errcode, "M_FORBIDDEN");
        t.diagnostic("kicked member's /messages: 403 M_FORBIDDEN");
    }
    if (bobView) {
        t.diagnostic(
            `kicked member's /messages: ${bobView.length} events, pre-kick message ` +
                `${ids(bobView).includes(beforeKick) ? "visible" : "not visible"}`,
        );
        assert.ok(!ids(bobView).includes(afterKick), "a kicked member must not see messages sent after the kick");
        for (const ev of bobView) {
            assert.ok(ev.content?.body !== "after the kick: bob must not see this", "post-kick message leaked");
        }
    }
    await expectMatrixError(
        () => bob.client.fetchRoomEvent(roomId, afterKick),
        { status: 404, errcode: "M_NOT_FOUND" },
        "kicked member fetching a message sent after the kick",
    );
    await expectMatrixError(
        () => sendText(bob, roomId, "bob after the kick"),
        { status: 403, errcode: "M_FORBIDDEN" },
        "kicked member sending",
    );

    // A kick is not a ban: bob can rejoin the public room and receives again.
    await join(bob, roomId);
    const afterRejoin = await sendText(alice, roomId, "after bob rejoined");
    assert.ok(
        ids((await paginate(bob.client, roomId, { dir: "b", limit: 10 })).events).includes(afterRejoin),
        "rejoined member must see new messages",
    );

    // --- Dave is banned.
    assert.deepEqual(await alice.client.ban(roomId, dave.userId, "e2e ban"), {});
    const banned = await alice.client.getStateEvent(roomId, "m.room.member", dave.userId);
    assert.equal(banned.membership, "ban", `banned member event: ${json(banned)}`);
    assert.equal(banned.reason, "e2e ban");
    assert.ok(!(dave.userId in (await joinedMembers(alice.client, roomId))), "banned user still in /joined_members");
    await expectMatrixError(
        () => dave.client.joinRoom(roomId),
        { status: 403, errcode: "M_FORBIDDEN" },
        "banned user joining",
    );
    await expectMatrixError(
        () => alice.client.invite(roomId, dave.userId),
        { status: 403, errcode: "M_FORBIDDEN" },
        "inviting a banned user",
    );
    await expectMatrixError(
        () => sendText(dave, roomId, "dave while banned"),
        { status: 403, errcode: "M_FORBIDDEN" },
        "banned user sending",
    );
    assert.equal(await currentMembership(alice.client, roomId, dave.userId), "ban", "failed join must not change the ban");

    // Only moderators kick/ban/unban (public_chat: bob is at 0, kick/ban need 50).
    await expectMatrixError(
        () => bob.client.unban(roomId, dave.userId),
        { status: 403, errcode: "M_FORBIDDEN" },
        "unban by a power-0 member",
    );
    await expectMatrixError(
        () => bob.client.kick(roomId, alice.userId, "mutiny"),
        { status: 403, errcode: "M_FORBIDDEN" },
        "kick by a power-0 member",
    );
    await expectMatrixError(
        () => bob.client.ban(roomId, carol.userId),
        { status: 403, errcode: "M_FORBIDDEN" },
        "ban by a power-0 member",
    );

    // Unban: membership goes to leave and dave can join again.
    assert.deepEqual(await alice.client.unban(roomId, dave.userId), {});
    assert.equal(await currentMembership(alice.client, roomId, dave.userId), "leave", "membership after unban");
    await join(dave, roomId);
    assert.deepEqual(
        Object.keys(await joinedMembers(dave.client, roomId)).sort(),
        [alice.userId, bob.userId, dave.userId].sort(),
        "joined members at the end",
    );
});

// ---------------------------------------------------------------------------
// 5. Pagination of 500 messages

test(
    "pagination: 500 messages read back by a fresh client, no gap or duplicate at any page size",
    { timeout: Math.max(TEST_TIMEOUT_MS, 300_000) },
    async () => {
        const TOTAL = 500;
        const BATCH = 10; // requests in flight at once
        const alice = await newUser("page-alice");
        const bob = await newUser("page-bob");
        const roomId = await createRoom(alice, { preset: "private_chat" });
        await inviteAndJoin(roomId, alice, [bob]); // bob joins before the messages
        assert.equal(
            (await bob.client.getStateEvent(roomId, "m.room.history_visibility", "")).history_visibility,
            "shared",
        );

        // Batches of 10 concurrent PUTs; each batch starts after the previous one finished,
        // so the server must order batch k after batch k-1 (order inside a batch is free).
        const runTag = tag();
        const idOf = new Map(); // N -> event_id
        for (let start = 0; start < TOTAL; start += BATCH) {
            const batch = [];
            for (let n = start; n < Math.min(TOTAL, start + BATCH); n++) {
                batch.push(
                    putSend(alice.client, roomId, "m.room.message", `e2e-page-${runTag}-${n}`, {
                        msgtype: "m.text",
                        body: `msg ${n}`,
                    }).then((res) => {
                        assertEventId(res?.event_id, `send msg ${n}`);
                        idOf.set(n, res.event_id);
                    }),
                );
            }
            await Promise.all(batch);
        }
        assert.equal(new Set(idOf.values()).size, TOTAL, "500 sends must yield 500 distinct event IDs");
        const nOf = new Map([...idOf].map(([n, id]) => [id, n]));

        // A fresh client: bob logs in on a new device, nothing cached.
        const fresh = await newDevice(bob);

        const checkMessages = (events, what) => {
            assertNoDuplicateIds(events, what);
            const msgs = events.filter((e) => isMessage(e) && /^msg \d+$/.test(e.content?.body ?? ""));
            assert.equal(msgs.length, TOTAL, `${what}: expected ${TOTAL} "msg N" events, got ${msgs.length}`);
            for (const e of msgs) {
                const n = Number(e.content.body.slice(4));
                assert.equal(e.event_id, idOf.get(n), `${what}: "msg ${n}" has event_id ${e.event_id}, sent as ${idOf.get(n)}`);
                assert.equal(e.sender, alice.userId);
            }
            assert.deepEqual(
                new Set(msgs.map((e) => nOf.get(e.event_id))),
                new Set(idOf.keys()),
                `${what}: every msg 0..${TOTAL - 1} exactly once`,
            );
            return msgs;
        };

        // Backwards from the latest event, at several page sizes: same sequence every time.
        let reference;
        let midToken;
        for (const limit of [1, 7, 50, 100]) {
            const what = `backwards, limit=${limit}`;
            const { events, pages } = await paginate(fresh.client, roomId, { dir: "b", limit, what });
            const msgs = checkMessages(events, what);
            // Later batches first.
            for (let i = 1; i < msgs.length; i++) {
                const prev = Math.floor(nOf.get(msgs[i - 1].event_id) / BATCH);
                const cur = Math.floor(nOf.get(msgs[i].event_id) / BATCH);
                assert.ok(
                    cur <= prev,
                    `${what}: "${msgs[i].content.body}" (batch ${cur}) came after "${msgs[i - 1].content.body}" ` +
                        `(batch ${prev}) going backwards: order does not match sending order`,
                );
            }
            assert.equal(events.at(-1).type, "m.room.create", `${what}: history must end at m.room.create`);
            if (reference === undefined) {
                reference = ids(events);
            } else {
                assert.deepEqual(ids(events), reference, `${what}: differs from the limit=1 order (a page boundary moved events)`);
            }
            if (limit === 100) {
                // `end` after the first 3 pages: 300 events back from the latest.
                midToken = pages[2]?.end;
            }
        }

        // Forwards from the very start (no `from`): the exact reverse.
        for (const limit of [13, 100]) {
            const what = `forwards from the start, limit=${limit}`;
            const { events } = await paginate(fresh.client, roomId, { dir: "f", limit, what });
            checkMessages(events, what);
            assert.deepEqual(ids(events), [...reference].reverse(), `${what}: must be the reverse of the backward order`);
        }

        // Forwards from a token got while paginating backwards: exactly the events seen before that token.
        assert.equal(typeof midToken, "string", "no end token after 3 pages of 100");
        const { events: tail } = await paginate(fresh.client, roomId, {
            dir: "f",
            limit: 7,
            from: midToken,
            what: "forwards from a backward end token",
        });
        assert.deepEqual(
            ids(tail),
            reference.slice(0, 300).reverse(),
            "dir=f from the end token of the 3rd backward page must return those 300 events, oldest first",
        );
    },
);

// ---------------------------------------------------------------------------
// 6. Transaction IDs

test("txnId: resending PUT /send with the same txnId returns the same event_id and stores one event", opts, async () => {
    const alice = await newUser("txn-alice");
    const bob = await newUser("txn-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, [bob]);
    const t = tag();
    const txnId = `e2e-txn-${t}`;
    const body = `idempotent ${t}`;
    const content = () => ({ msgtype: "m.text", body });

    // Same device: SDK sendEvent twice with the explicit txnId, then a raw PUT.
    const first = await sendEvent(alice, roomId, "m.room.message", content(), txnId);
    const second = await sendEvent(alice, roomId, "m.room.message", content(), txnId);
    assert.equal(second, first, "a retransmission (same device, same txnId) must return the original event_id");
    const raw = await putSend(alice.client, roomId, "m.room.message", txnId, content());
    assert.equal(raw.event_id, first, "raw PUT retransmission must return the original event_id");

    // Two concurrent PUTs with one txnId (a client retrying while the first is in flight).
    const raceTxn = `e2e-txn-race-${t}`;
    const raceBody = `race ${t}`;
    const race = await Promise.all(
        [0, 1].map(() => putSend(alice.client, roomId, "m.room.message", raceTxn, { msgtype: "m.text", body: raceBody })),
    );
    assert.equal(race[0].event_id, race[1].event_id, "concurrent PUTs with the same txnId must yield one event");

    // The same txnId from another device of the same user is a new request.
    const alice2 = await newDevice(alice);
    const other = await sendEvent(alice2, roomId, "m.room.message", content(), txnId);
    assert.notEqual(other, first, "the same txnId on another device must create a new event");
    // ...and from another user.
    const bobs = await sendEvent(bob, roomId, "m.room.message", content(), txnId);
    assert.notEqual(bobs, first);
    assert.notEqual(bobs, other);
    // ...and on the same device to another room (the path differs).
    const room2 = await createRoom(alice, { preset: "private_chat" });
    const inRoom2 = await sendEvent(alice, room2, "m.room.message", content(), txnId);
    assert.notEqual(inRoom2, first, "same txnId, different room: a different request");

    // The timeline holds exactly: one from alice's first device, one from her second, one from bob.
    const { events } = await paginate(bob.client, roomId, { dir: "b", limit: 20 });
    const withBody = events.filter((e) => isMessage(e) && e.content.body === body);
    assert.deepEqual(ids(withBody).sort(), [first, other, bobs].sort(), `events with body ${json(body)}: ${json(withBody)}`);
    assert.equal(events.filter((e) => isMessage(e) && e.content.body === raceBody).length, 1, "race: one stored event");
    const { events: events2 } = await paginate(alice.client, room2, { dir: "b", limit: 20 });
    assert.deepEqual(ids(events2.filter((e) => isMessage(e) && e.content.body === body)), [inRoom2]);

    // unsigned.transaction_id is shown to the sending device only.
    const own = await alice.client.fetchRoomEvent(roomId, first);
    assert.equal(own.unsigned?.transaction_id, txnId, `GET /event by the sending device: ${json(own)}`);
    const seenByOtherDevice = await alice2.client.fetchRoomEvent(roomId, first);
    assert.equal(seenByOtherDevice.unsigned?.transaction_id, undefined, "transaction_id leaked to another device");
    const seenByBob = await bob.client.fetchRoomEvent(roomId, first);
    assert.equal(seenByBob.unsigned?.transaction_id, undefined, "transaction_id leaked to another user");
});

// ---------------------------------------------------------------------------
// 7. Redaction

test("redaction: a redacted message has content {} and unsigned.redacted_because", opts, async () => {
    const alice = await newUser("redact-alice");
    const bob = await newUser("redact-bob");
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await inviteAndJoin(roomId, alice, [bob]);

    const target = await sendText(alice, roomId, "regrettable", { format: "org.matrix.custom.html", formatted_body: "<b>regrettable</b>" });
    const keep = await sendText(alice, roomId, "fine");

    // A power-0 member cannot redact someone else's event (redact: 50).
    await expectMatrixError(
        () => bob.client.redactEvent(roomId, target),
        { status: 403, errcode: "M_FORBIDDEN" },
        "bob redacting alice's message",
    );

    const red = await alice.client.redactEvent(roomId, target, undefined, { reason: "e2e oops" });
    assertEventId(red?.event_id, "PUT /redact");

    for (const viewer of [alice, bob]) {
        const ev = await viewer.client.fetchRoomEvent(roomId, target);
        assert.equal(ev.event_id, target);
        assert.equal(ev.type, "m.room.message");
        assert.equal(ev.sender, alice.userId);
        assert.deepEqual(ev.content, {}, `redacted content as ${viewer.userId}: ${json(ev)}`);
        const because = ev.unsigned?.redacted_because;
        assert.ok(because, `no unsigned.redacted_because as ${viewer.userId}: ${json(ev)}`);
        assert.equal(because.event_id, red.event_id);
        assert.equal(because.type, "m.room.redaction");
        assert.equal(because.sender, alice.userId);
        assert.equal(because.redacts ?? because.content?.redacts, target, `redacted_because.redacts: ${json(because)}`);
        assert.equal(because.content?.reason, "e2e oops");
        // Other events are untouched.
        assert.equal((await viewer.client.fetchRoomEvent(roomId, keep)).content.body, "fine");
    }

    // /messages shows the redacted event (content {}) and the redaction event.
    const { events } = await paginate(bob.client, roomId, { dir: "b", limit: 10 });
    const inTimeline = events.find((e) => e.event_id === target);
    assert.ok(inTimeline, "redacted event must stay in /messages");
    assert.deepEqual(inTimeline.content, {}, `redacted event in /messages: ${json(inTimeline)}`);
    assert.equal(inTimeline.unsigned?.redacted_because?.event_id, red.event_id);
    const redaction = events.find((e) => e.event_id === red.event_id);
    assert.equal(redaction?.type, "m.room.redaction", "the redaction event must be in /messages");
    assert.equal(redaction.redacts ?? redaction.content?.redacts, target);

    // Anyone may redact their own event.
    const bobsMsg = await sendText(bob, roomId, "bob's own");
    const bobRed = await bob.client.redactEvent(roomId, bobsMsg);
    assertEventId(bobRed?.event_id, "bob redacting his own message");
    const bobsAfter = await alice.client.fetchRoomEvent(roomId, bobsMsg);
    assert.deepEqual(bobsAfter.content, {});
    assert.equal(bobsAfter.unsigned?.redacted_because?.event_id, bobRed.event_id);
});

// ---------------------------------------------------------------------------
// 8. History visibility

const VISIBILITY_CASES = {
    // what a user invited after m1 and joined after m2 may see
    joined: { beforeInvite: false, betweenInviteAndJoin: false },
    invited: { beforeInvite: false, betweenInviteAndJoin: true },
    shared: { beforeInvite: true, betweenInviteAndJoin: true },
};

for (const [visibility, expected] of Object.entries(VISIBILITY_CASES)) {
    test(`history visibility '${visibility}': what a newly joined member can read`, opts, async () => {
        const alice = await newUser(`hv-${visibility}-alice`);
        const bob = await newUser(`hv-${visibility}-bob`);
        const roomId = await createRoom(alice, {
            preset: "private_chat",
            initial_state: [
                { type: "m.room.history_visibility", state_key: "", content: { history_visibility: visibility } },
            ],
        });
        assert.equal(
            (await alice.client.getStateEvent(roomId, "m.room.history_visibility", "")).history_visibility,
            visibility,
            "initial_state must override the preset's history_visibility",
        );

        const m1 = await sendText(alice, roomId, `before the invite (${visibility})`);
        await alice.client.invite(roomId, bob.userId);
        const m2 = await sendText(alice, roomId, `between invite and join (${visibility})`);
        await join(bob, roomId);
        const m3 = await sendText(alice, roomId, `after the join (${visibility})`);

        const visible = {
            [m1]: expected.beforeInvite,
            [m2]: expected.betweenInviteAndJoin,
            [m3]: true,
        };

        const back = ids((await paginate(bob.client, roomId, { dir: "b", limit: 3 })).events);
        const fwd = ids((await paginate(bob.client, roomId, { dir: "f", limit: 3 })).events);
        assert.deepEqual(fwd, [...back].reverse(), "dir=f from the start must be the reverse of dir=b");
        for (const [id, shouldSee] of Object.entries(visible)) {
            assert.equal(
                back.includes(id),
                shouldSee,
                `${visibility}: event ${id} ${shouldSee ? "must" : "must not"} be in bob's /messages`,
            );
        }
        const bobJoin = (await bob.client.getStateEvent(roomId, "m.room.member", bob.userId)).membership;
        assert.equal(bobJoin, "join");

        for (const [id, shouldSee] of Object.entries(visible)) {
            if (shouldSee) {
                const ev = await bob.client.fetchRoomEvent(roomId, id);
                assert.equal(ev.event_id, id);
                assert.equal(typeof ev.content.body, "string");
            } else {
                await expectMatrixError(
                    () => bob.client.fetchRoomEvent(roomId, id),
                    { status: 404, errcode: "M_NOT_FOUND" },
                    `${visibility}: GET /event of a message bob may not see`,
                );
            }
        }
        // The sender always sees everything.
        const aliceView = ids((await paginate(alice.client, roomId, { dir: "b", limit: 50 })).events);
        for (const id of [m1, m2, m3]) assert.ok(aliceView.includes(id), "alice must see her own messages");
    });
}
