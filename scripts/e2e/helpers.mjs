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
import { logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";

export { sdk };
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

function describe(v) {
    try {
        return JSON.stringify(v);
    } catch {
        return String(v);
    }
}

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
                `${what}: expected HTTP ${status}, got ${err.httpStatus} with body ${describe(err.data)}`,
            );
        }
        if (errcode !== undefined) {
            assert.equal(
                err.errcode ?? null,
                errcode,
                `${what}: expected errcode ${errcode}, got ${err.errcode} (HTTP ${err.httpStatus}) with body ` +
                    describe(err.data),
            );
        }
        return err;
    }
    assert.fail(
        `${what}: expected it to fail with ${status ?? ""} ${errcode ?? "a Matrix error"} but it succeeded: ` +
            describe(result),
    );
}

/** Asserts `err` is a well-formed Matrix error response (4xx, M_* errcode, string error). */
export function assertProperMatrixError(err, what = "request") {
    assert.ok(err instanceof MatrixError, `${what}: expected a MatrixError, got ${err?.name}: ${err?.message}`);
    assert.ok(
        err.httpStatus >= 400 && err.httpStatus < 500,
        `${what}: expected a 4xx status, got ${err.httpStatus} ${describe(err.data)}`,
    );
    assert.match(String(err.errcode), /^M_[A-Z_]+$/, `${what}: bad errcode in ${describe(err.data)}`);
    assert.equal(typeof err.data.error, "string", `${what}: missing "error" string in ${describe(err.data)}`);
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
    assert.equal(err.httpStatus, 401, `${what}: expected a 401 UIA challenge, got ${err.httpStatus} ${describe(err.data)}`);
    const body = err.data;
    assert.equal(typeof body.session, "string", `${what}: UIA challenge has no session: ${describe(body)}`);
    assert.ok(body.session.length > 0, `${what}: UIA challenge has an empty session`);
    assert.ok(Array.isArray(body.flows), `${what}: UIA challenge has no flows array: ${describe(body)}`);
    const offered = body.flows.map((f) => f?.stages);
    assert.ok(
        offered.some((s) => Array.isArray(s) && s.length === stages.length && s.every((x, i) => x === stages[i])),
        `${what}: UIA flows ${describe(offered)} do not include ${describe(stages)}`,
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
 * second carries auth {type: "m.login.dummy", session}.
 *
 * Returns {client, userId, deviceId, accessToken, username, password, response, challenge}.
 */
export async function registerUser({ prefix = "user", username, password, deviceName, extra = {} } = {}) {
    username ??= uniqueUsername(prefix);
    password ??= randomPassword();
    const anon = makeClient();
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
                `e2e: registration needs a [m.login.dummy] flow but the server offers ${describe(flows)}`,
            );
        }
        response = await anon.registerRequest({
            ...body,
            auth: { type: "m.login.dummy", session: challenge.session },
        });
    }

    assert.equal(typeof response.user_id, "string", `register: no user_id in ${describe(response)}`);
    assert.equal(typeof response.access_token, "string", `register: no access_token in ${describe(response)}`);
    assert.equal(typeof response.device_id, "string", `register: no device_id in ${describe(response)}`);

    const client = makeClient({
        accessToken: response.access_token,
        userId: response.user_id,
        deviceId: response.device_id,
    });
    return {
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

    assert.equal(typeof response.access_token, "string", `login: no access_token in ${describe(response)}`);
    assert.equal(typeof response.device_id, "string", `login: no device_id in ${describe(response)}`);
    assert.equal(response.user_id, user.userId, `login: wrong user_id in ${describe(response)}`);

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
    assert.equal(typeof body?.nonce, "string", `shared-secret register: GET returned no nonce: ${describe(body)}`);
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
