// Shared helpers for the end-to-end suites in scripts/e2e.
//
// Every suite drives the homeserver through matrix-js-sdk, the real client
// library. Import this module first: it installs the Node 20 polyfills before
// matrix-js-sdk is evaluated.
//
// Environment (set by scripts/test.sh):
//   HS_E2E_BASE_URL       client-server API base URL, e.g. http://127.0.0.1:18008
//   HS_E2E_SHARED_SECRET  registration shared secret (for /_synapse/admin/v1/register)
//   HS_E2E_SERVER_NAME    the server name, e.g. localhost
//   HS_E2E_SDK_LOG        optional matrix-js-sdk log level (trace|debug|info|warn|error|silent),
//                         default silent

import "./polyfill.mjs";

import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";

import * as sdk from "matrix-js-sdk";
import * as cryptoApi from "matrix-js-sdk/lib/crypto-api/index.js";
import { logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";

/** sdk: the matrix-js-sdk module; cryptoApi: its crypto-api module (CryptoEvent, VerificationPhase, ...). */
export { sdk, cryptoApi };
export const { createClient, MatrixError, Method, ClientPrefix } = sdk;

// ---------------------------------------------------------------------------
// Configuration

export const BASE_URL = (process.env.HS_E2E_BASE_URL || "http://127.0.0.1:18008").replace(/\/+$/, "");
export const SHARED_SECRET = process.env.HS_E2E_SHARED_SECRET || "";
export const SERVER_NAME = process.env.HS_E2E_SERVER_NAME || "localhost";

/** Per-request client-side timeout, so a hung server fails a test instead of hanging the run. */
export const REQUEST_TIMEOUT_MS = Number(process.env.HS_E2E_REQUEST_TIMEOUT_MS || 30_000);

/** Default per-test timeout (node:test `timeout` option). */
export const TEST_TIMEOUT_MS = Number(process.env.HS_E2E_TEST_TIMEOUT_MS || 120_000);

// ---------------------------------------------------------------------------
// Small utilities

/** JSON text of `v` for messages (String(v) if it does not serialise). */
export function json(v) {
    try {
        return JSON.stringify(v);
    } catch {
        return String(v);
    }
}

/** 8 random hex characters, to make names and message bodies unique. */
export const tag = () => randomBytes(4).toString("hex");

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// SDK logging: quiet by default (expected failures such as M_UNKNOWN_TOKEN make
// the SDK log errors), switchable with HS_E2E_SDK_LOG.

const LEVELS = ["trace", "debug", "info", "warn", "error", "silent"];
const SDK_LOG_LEVEL = LEVELS.includes(process.env.HS_E2E_SDK_LOG) ? process.env.HS_E2E_SDK_LOG : "silent";
sdkGlobalLogger.setLevel(SDK_LOG_LEVEL, false);

// The SDK's child loggers (e.g. MatrixRTCSession's, created while a client syncs) start at
// DEBUG whatever the parent's level; give every child, recursively, the level chosen above.
function inheritLevel(parent) {
    const getChild = parent.getChild;
    parent.getChild = (prefix) => {
        const child = getChild.call(parent, prefix);
        child.setLevel(SDK_LOG_LEVEL, false);
        if (!child.e2eInheritsLevel) {
            child.e2eInheritsLevel = true;
            inheritLevel(child);
        }
        return child;
    };
}
inheritLevel(sdkGlobalLogger);

function makeLogger(prefix = "") {
    const min = LEVELS.indexOf(SDK_LOG_LEVEL);
    const out = (level) =>
        LEVELS.indexOf(level) >= min
            ? (...args) => console.error(`[sdk ${level}]${prefix ? " " + prefix : ""}`, ...args)
            : () => {};
    return {
        trace: out("trace"),
        debug: out("debug"),
        info: out("info"),
        warn: out("warn"),
        error: out("error"),
        getChild: (ns) => makeLogger(prefix + ns),
    };
}

// ---------------------------------------------------------------------------
// Server reachability: fail fast and clearly when nothing is listening.

let serverCheck;

/**
 * Resolves once BASE_URL answers GET /_matrix/client/versions like a Matrix
 * homeserver; otherwise rejects with an explanatory message. Memoised.
 * Test files call this with top-level await so an unreachable server fails
 * the whole file at once instead of every test timing out.
 */
export function requireServer() {
    serverCheck ??= (async () => {
        const url = `${BASE_URL}/_matrix/client/versions`;
        let res;
        try {
            res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
        } catch (e) {
            const cause = e?.cause?.code || e?.cause?.message || e?.message || String(e);
            throw new Error(
                `e2e: homeserver not reachable at ${BASE_URL} (GET ${url} failed: ${cause}). ` +
                    `Start the homeserver and/or set HS_E2E_BASE_URL.`,
            );
        }
        const text = await res.text();
        let body;
        try {
            body = JSON.parse(text);
        } catch {
            body = undefined;
        }
        if (!res.ok || !Array.isArray(body?.versions)) {
            throw new Error(
                `e2e: ${BASE_URL} does not look like a Matrix homeserver: GET ${url} -> HTTP ${res.status} ` +
                    `${text.slice(0, 300)}`,
            );
        }
        return body;
    })();
    return serverCheck;
}

// ---------------------------------------------------------------------------
// Clients

const liveClients = new Set();

/**
 * createClient() against BASE_URL. Every client is tracked so that
 * stopAllClients() (run after each test) can shut it down.
 */
export function makeClient({ accessToken, userId, deviceId, refreshToken, ...rest } = {}) {
    const client = createClient({
        baseUrl: BASE_URL,
        accessToken,
        userId,
        deviceId,
        refreshToken,
        localTimeoutMs: REQUEST_TIMEOUT_MS,
        logger: makeLogger(),
        ...rest,
    });
    liveClients.add(client);
    return client;
}

/** Stops every client created through makeClient(). Safe to call repeatedly. */
export function stopAllClients() {
    for (const client of liveClients) {
        try {
            client.stopClient();
            client.http.abort();
        } catch {
            // best effort
        }
    }
    liveClients.clear();
}

/**
 * Rust crypto for later suites: on Node there is no IndexedDB, so the crypto
 * store must be in memory.
 */
export async function initCrypto(client) {
    await client.initRustCrypto({ useIndexedDB: false });
    return client.getCrypto();
}

// ---------------------------------------------------------------------------
// Names

let nameCounter = 0;
const runTag = `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;

/**
 * A username that is unique per run and per call, so reruns against the same
 * (persistent) server never clash. Only characters allowed in user IDs:
 * lowercase a-z, 0-9 and . _ = - /
 */
export function uniqueUsername(prefix = "user") {
    nameCounter += 1;
    const clean = String(prefix).toLowerCase().replace(/[^a-z0-9._=\-/]/g, "-");
    return `e2e-${clean}-${runTag}-${nameCounter}`;
}

export function randomPassword() {
    return `pw-${randomBytes(12).toString("base64url")}`;
}

export function userIdFor(localpart) {
    return `@${localpart}:${SERVER_NAME}`;
}

// ---------------------------------------------------------------------------
// Error assertions

/**
 * Awaits `promiseOrFn` (a promise, or a function returning one) and asserts it
 * rejects with a MatrixError carrying the given errcode / HTTP status. Returns
 * the error for further checks. `errcode: null` asserts there is no errcode
 * (e.g. the first 401 of a user-interactive-auth exchange may carry none).
 */
export async function expectMatrixError(promiseOrFn, { errcode, status } = {}, what = "request") {
    let result;
    try {
        result = await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
    } catch (err) {
        if (!(err instanceof MatrixError)) {
            assert.fail(
                `${what}: expected a Matrix error (${status ?? "?"} ${errcode ?? ""}) but got a non-Matrix ` +
                    `error: ${err?.name}: ${err?.message}` +
                    (err?.httpStatus ? ` (HTTP ${err.httpStatus})` : ""),
            );
        }
        if (status !== undefined) {
            assert.equal(
                err.httpStatus,
                status,
                `${what}: expected HTTP ${status}, got ${err.httpStatus} with body ${json(err.data)}`,
            );
        }
        if (errcode !== undefined) {
            assert.equal(
                err.errcode ?? null,
                errcode,
                `${what}: expected errcode ${errcode}, got ${err.errcode} (HTTP ${err.httpStatus}) with body ` +
                    json(err.data),
            );
        }
        return err;
    }
    assert.fail(
        `${what}: expected it to fail with ${status ?? ""} ${errcode ?? "a Matrix error"} but it succeeded: ` +
            json(result),
    );
}

/** Asserts `err` is a well-formed Matrix error response (4xx, M_* errcode, string error). */
export function assertProperMatrixError(err, what = "request") {
    assert.ok(err instanceof MatrixError, `${what}: expected a MatrixError, got ${err?.name}: ${err?.message}`);
    assert.ok(
        err.httpStatus >= 400 && err.httpStatus < 500,
        `${what}: expected a 4xx status, got ${err.httpStatus} ${json(err.data)}`,
    );
    assert.match(String(err.errcode), /^M_[A-Z_]+$/, `${what}: bad errcode in ${json(err.data)}`);
    assert.equal(typeof err.data.error, "string", `${what}: missing "error" string in ${json(err.data)}`);
}

// ---------------------------------------------------------------------------
// User-interactive authentication

/** Auth dict for the m.login.password UIA stage. */
export function passwordAuth(user, password, session) {
    return {
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password,
        session,
    };
}

/**
 * Asserts that `err` is the 401 response that starts a user-interactive-auth
 * exchange and offers a flow consisting of exactly `stages`. Returns the UIA
 * body ({session, flows, params, ...}).
 */
export function assertUiaChallenge(err, stages, what = "request") {
    assert.ok(err instanceof MatrixError, `${what}: expected a MatrixError, got ${err?.name}: ${err?.message}`);
    assert.equal(err.httpStatus, 401, `${what}: expected a 401 UIA challenge, got ${err.httpStatus} ${json(err.data)}`);
    const body = err.data;
    assert.equal(typeof body.session, "string", `${what}: UIA challenge has no session: ${json(body)}`);
    assert.ok(body.session.length > 0, `${what}: UIA challenge has an empty session`);
    assert.ok(Array.isArray(body.flows), `${what}: UIA challenge has no flows array: ${json(body)}`);
    const offered = body.flows.map((f) => f?.stages);
    assert.ok(
        offered.some((s) => Array.isArray(s) && s.length === stages.length && s.every((x, i) => x === stages[i])),
        `${what}: UIA flows ${json(offered)} do not include ${json(stages)}`,
    );
    return body;
}

/**
 * Runs `call(auth)` first without auth, expects the UIA challenge offering
 * [m.login.password], then retries with password auth and the session.
 * Returns {result, challenge}.
 */
export async function withPasswordUia(call, { user, password }, what = "request") {
    const err = await expectMatrixError(() => call(undefined), { status: 401 }, `${what} without auth`);
    const challenge = assertUiaChallenge(err, ["m.login.password"], what);
    const result = await call(passwordAuth(user, password, challenge.session));
    return { result, challenge };
}

// ---------------------------------------------------------------------------
// Accounts

/**
 * Registers a new user through POST /register using the SDK, doing the UIA
 * dance: the first request (no auth) gets 401 with a session and flows; the
 * second carries auth {type: "m.login.dummy", session}. baseUrl chooses another server than
 * BASE_URL (federation tests); the result then carries it, and syncClient uses it.
 *
 * Returns {client, userId, deviceId, accessToken, username, password, response, challenge}.
 */
export async function registerUser({ prefix = "user", username, password, deviceName, extra = {}, baseUrl } = {}) {
    username ??= uniqueUsername(prefix);
    password ??= randomPassword();
    const server = baseUrl ? { baseUrl } : {};
    const anon = makeClient(server);
    const body = {
        username,
        password,
        initial_device_display_name: deviceName ?? `e2e ${prefix}`,
        ...extra,
    };

    let response;
    let challenge;
    try {
        // A server that (wrongly) needs no UIA answers 200 here; accounts.test.mjs
        // checks the 401 explicitly, so the helper tolerates it.
        response = await anon.registerRequest(body);
    } catch (err) {
        if (!(err instanceof MatrixError) || err.httpStatus !== 401 || typeof err.data?.session !== "string") {
            throw err;
        }
        challenge = err.data;
        const flows = (challenge.flows ?? []).map((f) => f?.stages);
        if (!flows.some((s) => Array.isArray(s) && s.length === 1 && s[0] === "m.login.dummy")) {
            throw new Error(
                `e2e: registration needs a [m.login.dummy] flow but the server offers ${json(flows)}`,
            );
        }
        response = await anon.registerRequest({
            ...body,
            auth: { type: "m.login.dummy", session: challenge.session },
        });
    }

    assert.equal(typeof response.user_id, "string", `register: no user_id in ${json(response)}`);
    assert.equal(typeof response.access_token, "string", `register: no access_token in ${json(response)}`);
    assert.equal(typeof response.device_id, "string", `register: no device_id in ${json(response)}`);

    const client = makeClient({
        accessToken: response.access_token,
        userId: response.user_id,
        deviceId: response.device_id,
        ...server,
    });
    return {
        ...server,
        client,
        userId: response.user_id,
        deviceId: response.device_id,
        accessToken: response.access_token,
        username,
        password,
        response,
        challenge,
    };
}

/**
 * Logs `user` (as returned by registerUser) in on a new device with
 * m.login.password via the SDK's loginRequest. Returns
 * {client, userId, deviceId, accessToken, refreshToken, response}.
 */
export async function loginDevice(
    user,
    { deviceName, refreshToken = false, password = user.password, identifier = user.username, deviceId } = {},
) {
    const anon = makeClient();
    const request = {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: identifier },
        password,
        initial_device_display_name: deviceName ?? "e2e login",
    };
    if (refreshToken) request.refresh_token = true;
    if (deviceId) request.device_id = deviceId;
    const response = await anon.loginRequest(request);

    assert.equal(typeof response.access_token, "string", `login: no access_token in ${json(response)}`);
    assert.equal(typeof response.device_id, "string", `login: no device_id in ${json(response)}`);
    assert.equal(response.user_id, user.userId, `login: wrong user_id in ${json(response)}`);

    const client = makeClient({
        accessToken: response.access_token,
        userId: response.user_id,
        deviceId: response.device_id,
        refreshToken: response.refresh_token,
    });
    return {
        client,
        userId: response.user_id,
        deviceId: response.device_id,
        accessToken: response.access_token,
        refreshToken: response.refresh_token,
        response,
    };
}

/** A client that uses `accessToken` (e.g. an old, revoked one) for the same user. */
export function clientWithToken(accessToken, { userId, deviceId } = {}) {
    return makeClient({ accessToken, userId, deviceId });
}

/**
 * Registers a user through the Synapse-compatible shared-secret admin API:
 * GET /_synapse/admin/v1/register -> {nonce}; POST {nonce, username, password,
 * admin, mac} with mac = hex HMAC-SHA1(secret, nonce\0username\0password\0admin|notadmin).
 */
export async function sharedSecretRegister({
    username,
    password,
    admin = false,
    secret = SHARED_SECRET,
    nonce,
    mac,
    client,
}) {
    client ??= makeClient();
    const opts = { prefix: "/_synapse/admin/v1" };
    if (nonce === undefined) {
        ({ nonce } = await sharedSecretNonce(client));
    }
    mac ??= sharedSecretMac(secret, { nonce, username, password, admin });
    const response = await client.http.request(
        Method.Post,
        "/register",
        undefined,
        { nonce, username, password, admin, mac },
        opts,
    );
    return { nonce, mac, response };
}

/** GET /_synapse/admin/v1/register -> {nonce} */
export async function sharedSecretNonce(client = makeClient()) {
    const body = await client.http.request(Method.Get, "/register", undefined, undefined, {
        prefix: "/_synapse/admin/v1",
    });
    assert.equal(typeof body?.nonce, "string", `shared-secret register: GET returned no nonce: ${json(body)}`);
    assert.ok(body.nonce.length > 0, "shared-secret register: empty nonce");
    return body;
}

export function sharedSecretMac(secret, { nonce, username, password, admin = false }) {
    return createHmac("sha1", secret)
        .update(nonce)
        .update("\x00")
        .update(username)
        .update("\x00")
        .update(password)
        .update("\x00")
        .update(admin ? "admin" : "notadmin")
        .digest("hex");
}

// ---------------------------------------------------------------------------
// Syncing clients, rooms and messages (sync.test.mjs, signals.test.mjs, e2ee.test.mjs)

/** How long a live change may take from the sender's 200 to another client (default of until()). */
export const LIVE_DEADLINE_MS = 5_000;
/** How long startClient() may take to reach PREPARED. */
export const PREPARED_DEADLINE_MS = 20_000;

/**
 * A MatrixScheduler that queues nothing and never retries. The SDK's default one queues every
 * m.room.message of a client into one FIFO and silently retries failed sends (which would hide
 * a 5xx from the server).
 */
export function immediateScheduler() {
    return new sdk.MatrixScheduler(
        () => -1,
        () => null,
    );
}

/** A REST-only client that sends events straight to the server (immediateScheduler). */
export function directClient({ accessToken, userId, deviceId }) {
    return makeClient({ accessToken, userId, deviceId, scheduler: immediateScheduler() });
}

/** registerUser({prefix}) whose `client` is a directClient. */
export async function newUser(prefix) {
    const user = await registerUser({ prefix });
    user.client = directClient(user);
    return user;
}

/**
 * A fetchFn that records the raw JSON of every successful /sync response (and, with
 * `messages`, every /rooms/{roomId}/messages response) into `log`: entries
 * {kind: "sync"|"messages", query, status, at, body}. It reads the body before handing a copy
 * to the SDK, since the SDK silently drops what it already has (a duplicated event), ignores
 * what it does not support and echoes some things locally.
 */
export function recordingFetch(log, { messages = false } = {}) {
    return async (resource, init) => {
        const res = await fetch(resource, init);
        const url = new URL(typeof resource === "string" || resource instanceof URL ? resource : resource.url);
        const kind = /\/sync$/.test(url.pathname)
            ? "sync"
            : messages && /\/rooms\/[^/]+\/messages$/.test(url.pathname)
              ? "messages"
              : null;
        if (!kind || !res.ok) return res;
        const text = await res.text();
        const entry = { kind, query: Object.fromEntries(url.searchParams), status: res.status, at: Date.now() };
        try {
            entry.body = JSON.parse(text);
        } catch {
            entry.body = undefined;
        }
        log.push(entry);
        return new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
    };
}

/**
 * A client for `user` meant for startClient(); it records its raw /sync responses (and with
 * `recordMessages` its /messages responses) in client.rawLog. `store` replaces the default
 * MemoryStore; `stubPushRules` makes it use the SDK's default push rules instead of fetching
 * GET /pushrules/; `extra` goes to createClient.
 */
export function syncClient(user, { store, recordMessages = false, stubPushRules = false, ...extra } = {}) {
    const rawLog = [];
    const client = makeClient({
        accessToken: user.accessToken,
        userId: user.userId,
        deviceId: user.deviceId,
        fetchFn: recordingFetch(rawLog, { messages: recordMessages }),
        ...(user.baseUrl ? { baseUrl: user.baseUrl } : {}),
        ...(store ? { store } : {}),
        ...extra,
    });
    client.rawLog = rawLog;
    if (stubPushRules) {
        client.getPushRules = async () => {
            client.setPushRules({ global: {} });
            return client.pushRules;
        };
    }
    return client;
}

/** One line for an error in a failure message. */
export function describeError(err) {
    if (!err) return "none";
    if (err instanceof MatrixError) return `HTTP ${err.httpStatus} ${err.errcode} ${json(err.data)} (${err.url ?? ""})`;
    return `${err.name}: ${err.message}`;
}

/**
 * startClient({initialSyncLimit, pendingEventOrdering: "detached", ...rest}) and waits for the
 * 'sync' event with state PREPARED. Fails with the last sync error if it does not come.
 */
export async function startSyncing(client, { initialSyncLimit = 20, ...rest } = {}) {
    const states = [];
    let lastError;
    let onSync;
    const prepared = new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            reject(
                new Error(
                    `startClient for ${client.getUserId()}: no PREPARED within ${PREPARED_DEADLINE_MS} ms; ` +
                        `sync states ${json(states)}; last error: ${describeError(lastError)}`,
                ),
            );
        }, PREPARED_DEADLINE_MS);
        onSync = (state, _prev, data) => {
            states.push(state);
            if (state === sdk.SyncState.Error) lastError = data?.error;
            if (state === sdk.SyncState.Prepared) {
                clearTimeout(timer);
                resolve();
            }
        };
        client.on(sdk.ClientEvent.Sync, onSync);
    });
    try {
        await client.startClient({ initialSyncLimit, pendingEventOrdering: "detached", ...rest });
        await prepared;
    } finally {
        client.removeListener(sdk.ClientEvent.Sync, onSync);
    }
    return client;
}

/** Polls `cond` until it returns a truthy value (returned); fails after timeoutMs with `what`. */
export async function until(cond, { timeoutMs = LIVE_DEADLINE_MS, intervalMs = 20, what = "condition" } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) {
            assert.fail(`timed out after ${timeoutMs} ms waiting for ${typeof what === "function" ? what() : what}`);
        }
        await sleep(intervalMs);
    }
}

/** owner.client.createRoom(options); returns the room ID. */
export async function createRoom(owner, options) {
    const res = await owner.client.createRoom(options);
    assert.equal(typeof res?.room_id, "string", `createRoom: no room_id in ${json(res)}`);
    return res.room_id;
}

/** The inviter invites each user in turn, who joins. */
export async function inviteAndJoin(roomId, inviter, ...users) {
    for (const u of users) {
        await inviter.client.invite(roomId, u.userId);
        await u.client.joinRoom(roomId);
    }
}

/** Sends an m.text message through user.client; returns its event ID. */
export async function sendText(user, roomId, body) {
    const res = await user.client.sendMessage(roomId, { msgtype: "m.text", body });
    assert.match(String(res?.event_id), /^\$/, `send "${body}": bad event_id in ${json(res)}`);
    return res.event_id;
}

/** Sends `n` messages one after the other, as fast as the server answers: [{id, body, sentAt, ackAt}]. */
export async function sendMany(user, roomId, n, label) {
    const sent = [];
    for (let i = 0; i < n; i++) {
        const body = `${label} ${i}`;
        const sentAt = Date.now();
        const id = await sendText(user, roomId, body);
        sent.push({ id, body, sentAt, ackAt: Date.now() });
    }
    return sent;
}

/**
 * Collects the live m.room.message events a client emits for `roomId` through Room.timeline
 * (not back-pagination, not removals): [{id, body, at}].
 */
export function collectLive(client, roomId) {
    const got = [];
    client.on(sdk.RoomEvent.Timeline, (ev, room, toStartOfTimeline, removed, data) => {
        if (room?.roomId !== roomId || toStartOfTimeline || removed || !data?.liveEvent) return;
        if (ev.getType() !== "m.room.message") return;
        got.push({ id: ev.getId(), body: ev.getContent().body, at: Date.now() });
    });
    return got;
}

/** Message events of the room's live timeline, oldest first: [{id, body}]. */
export function liveMessages(room) {
    return room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => ({ id: e.getId(), body: e.getContent().body }));
}

/**
 * Asserts `got` is exactly `want` in order, comparing IDs (elements: {id}, raw events
 * {event_id} or ID strings); explains what is missing, duplicated or reordered, plus
 * `explain(ids)` of the missing and duplicated ones if given.
 */
export function assertSameSequence(got, want, what, explain) {
    const gotIds = got.map((e) => e.id ?? e.event_id ?? e);
    const wantIds = want.map((e) => e.id ?? e);
    if (json(gotIds) === json(wantIds)) return;
    const count = new Map();
    for (const id of gotIds) count.set(id, (count.get(id) ?? 0) + 1);
    const dups = [...count].filter(([, n]) => n > 1).map(([id]) => id);
    const missing = wantIds.filter((id) => !count.has(id));
    const extra = gotIds.filter((id) => !wantIds.includes(id));
    const bodyOf = new Map(want.map((e) => [e.id, e.body]));
    const name = (id) => `${id}${bodyOf.has(id) ? ` (${json(bodyOf.get(id))})` : ""}`;
    assert.fail(
        `${what}: expected ${wantIds.length} events in send order, got ${gotIds.length}.` +
            (missing.length ? ` Missing: ${missing.map(name).join(", ")}.` : "") +
            (dups.length ? ` Duplicated: ${dups.map(name).join(", ")}.` : "") +
            (extra.length ? ` Unexpected: ${extra.join(", ")}.` : "") +
            (!missing.length && !dups.length && !extra.length ? ` Order differs: got ${gotIds.map(name).join(", ")}.` : "") +
            (explain ? `\n${explain([...missing, ...dups])}` : ""),
    );
}

/**
 * A MemoryStore that keeps what a persistent store (IndexedDBStore) keeps across restarts: the
 * accumulated sync data and the next_batch token, in a SyncAccumulator shared by the clients
 * that are given it. A new client over the same accumulator starts like a restarted app: it
 * replays the saved sync and continues with an incremental /sync from the saved token.
 */
export class PersistedSyncStore extends sdk.MemoryStore {
    constructor(accumulator) {
        super();
        this.accumulator = accumulator;
    }

    setSyncData(syncData) {
        this.accumulator.accumulate(syncData);
        return Promise.resolve();
    }

    getSavedSync() {
        const data = this.accumulator.getJSON();
        return Promise.resolve(data.nextBatch ? structuredClone(data) : null);
    }

    getSavedSyncToken() {
        return Promise.resolve(this.accumulator.getNextBatchToken() ?? null);
    }
}

/**
 * Starts a client of `user` over the persisted sync store `saved` (what IndexedDB keeps across
 * restarts), syncing with a timeline limit, and collects the live events of `roomId`. `options`
 * go to syncClient. Returns { client, live }.
 */
export async function startPersisted(user, saved, roomId, timelineLimit, options = {}) {
    const client = syncClient(user, { ...options, store: new PersistedSyncStore(saved) });
    const live = collectLive(client, roomId);
    const filter = new sdk.Filter(user.userId);
    filter.setTimelineLimit(timelineLimit);
    await startSyncing(client, { filter });
    return { client, live };
}
