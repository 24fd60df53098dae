// Accounts, devices, profiles and account data, driven through matrix-js-sdk.
//
// Run: HS_E2E_BASE_URL=http://127.0.0.1:18008 HS_E2E_SHARED_SECRET=... HS_E2E_SERVER_NAME=localhost \
//      node --test --test-force-exit --test-concurrency=1 accounts.test.mjs
//
// Every test registers its own users (unique names), so tests are independent
// of each other and of earlier runs against the same server.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import {
    Method,
    SERVER_NAME,
    SHARED_SECRET,
    TEST_TIMEOUT_MS,
    assertProperMatrixError,
    assertUiaChallenge,
    clientWithToken,
    expectMatrixError,
    loginDevice,
    makeClient,
    passwordAuth,
    randomPassword,
    registerUser,
    requireServer,
    sharedSecretMac,
    sharedSecretNonce,
    sharedSecretRegister,
    stopAllClients,
    uniqueUsername,
    userIdFor,
    withPasswordUia,
} from "./helpers.mjs";

// Fail the whole file at once, with a clear message, if no server is there.
await requireServer();

afterEach(() => stopAllClients());

const opts = { timeout: TEST_TIMEOUT_MS };

/** Raw path helpers for endpoints the SDK has no getter for. */
const enc = encodeURIComponent;
const accountDataPath = (userId, type) => `/user/${enc(userId)}/account_data/${enc(type)}`;
const roomAccountDataPath = (userId, roomId, type) =>
    `/user/${enc(userId)}/rooms/${enc(roomId)}/account_data/${enc(type)}`;

async function assertWhoami(client, { userId, deviceId }, what) {
    const me = await client.whoami();
    assert.equal(me.user_id, userId, `${what}: whoami user_id`);
    assert.equal(me.device_id, deviceId, `${what}: whoami device_id`);
    return me;
}

/** The token must be dead: whoami answers 401 M_UNKNOWN_TOKEN, not soft-logged-out. */
async function assertTokenRevoked(accessToken, what) {
    const err = await expectMatrixError(
        () => clientWithToken(accessToken).whoami(),
        { status: 401, errcode: "M_UNKNOWN_TOKEN" },
        `${what}: whoami with revoked token`,
    );
    assert.notEqual(err.data.soft_logout, true, `${what}: a logged-out session must not be soft_logout`);
}

async function deviceIds(client) {
    const { devices } = await client.getDevices();
    assert.ok(Array.isArray(devices), "GET /devices: devices must be an array");
    return devices.map((d) => d.device_id).sort();
}

// ---------------------------------------------------------------------------

test("GET /versions lists supported spec versions", opts, async () => {
    const res = await makeClient().getVersions();
    assert.ok(Array.isArray(res.versions) && res.versions.length > 0, `versions: ${JSON.stringify(res)}`);
    for (const v of res.versions) {
        assert.match(v, /^(r0\.\d+\.\d+|v\d+\.\d+)$/, `malformed version string ${JSON.stringify(v)}`);
    }
    assert.ok(
        res.versions.some((v) => /^v1\.\d+$/.test(v)),
        `no v1.x spec version advertised: ${JSON.stringify(res.versions)}`,
    );
    if (res.unstable_features !== undefined) {
        assert.equal(typeof res.unstable_features, "object", "unstable_features must be an object");
        for (const [k, v] of Object.entries(res.unstable_features)) {
            assert.equal(typeof v, "boolean", `unstable_features.${k} must be a boolean`);
        }
    }
});

test("register: POST /register does UIA with m.login.dummy and returns a working login", opts, async () => {
    const anon = makeClient();
    const username = uniqueUsername("reg");
    const password = randomPassword();
    const body = { username, password, initial_device_display_name: "e2e reg device" };

    const err = await expectMatrixError(() => anon.registerRequest(body), { status: 401 }, "register without auth");
    const challenge = assertUiaChallenge(err, ["m.login.dummy"], "register");

    const res = await anon.registerRequest({ ...body, auth: { type: "m.login.dummy", session: challenge.session } });
    assert.equal(res.user_id, userIdFor(username), "register: user_id");
    assert.equal(typeof res.access_token, "string");
    assert.ok(res.access_token.length > 0, "register: empty access_token");
    assert.equal(typeof res.device_id, "string");
    assert.ok(res.device_id.length > 0, "register: empty device_id");

    const client = makeClient({ accessToken: res.access_token, userId: res.user_id, deviceId: res.device_id });
    await assertWhoami(client, { userId: res.user_id, deviceId: res.device_id }, "registered user");

    const dev = await client.getDevice(res.device_id);
    assert.equal(dev.device_id, res.device_id);
    assert.equal(dev.display_name, "e2e reg device", "initial_device_display_name must name the device");
});

test("register: a taken username is refused with M_USER_IN_USE", opts, async () => {
    const alice = await registerUser({ prefix: "taken" });

    await expectMatrixError(
        () => registerUser({ username: alice.username, password: randomPassword() }),
        { status: 400, errcode: "M_USER_IN_USE" },
        "register with a taken username",
    );

    // GET /register/available agrees.
    const anon = makeClient();
    assert.equal(await anon.isUsernameAvailable(alice.username), false, "taken name reported available");
    assert.equal(await anon.isUsernameAvailable(uniqueUsername("free")), true, "free name reported unavailable");

    // The original account is untouched: its password still logs in.
    const again = await loginDevice(alice);
    assert.equal(again.userId, alice.userId);
});

test("login: password login by localpart and by full user ID; bad credentials get M_FORBIDDEN", opts, async () => {
    const alice = await registerUser({ prefix: "login" });

    const byLocalpart = await loginDevice(alice, { identifier: alice.username });
    const byUserId = await loginDevice(alice, { identifier: alice.userId });
    assert.notEqual(byLocalpart.deviceId, byUserId.deviceId, "each login must create its own device");
    assert.notEqual(byLocalpart.accessToken, byUserId.accessToken, "each login must get its own token");
    await assertWhoami(byLocalpart.client, byLocalpart, "login by localpart");
    await assertWhoami(byUserId.client, byUserId, "login by user ID");

    await expectMatrixError(
        () => loginDevice(alice, { password: "definitely-not-the-password" }),
        { status: 403, errcode: "M_FORBIDDEN" },
        "login with a wrong password",
    );
    await expectMatrixError(
        () => loginDevice({ ...alice, username: uniqueUsername("nobody") }, { identifier: uniqueUsername("nobody") }),
        { status: 403, errcode: "M_FORBIDDEN" },
        "login as an unknown user",
    );
});

test("whoami: right user_id/device_id; missing token M_MISSING_TOKEN, bogus token M_UNKNOWN_TOKEN", opts, async () => {
    const alice = await registerUser({ prefix: "whoami" });
    const alice2 = await loginDevice(alice);
    await assertWhoami(alice.client, alice, "registration token");
    await assertWhoami(alice2.client, alice2, "login token");

    await expectMatrixError(() => makeClient().whoami(), { status: 401, errcode: "M_MISSING_TOKEN" }, "whoami with no token");
    await expectMatrixError(
        () => clientWithToken(`bogus_${randomBytes(16).toString("hex")}`).whoami(),
        { status: 401, errcode: "M_UNKNOWN_TOKEN" },
        "whoami with a made-up token",
    );
});

test("acceptance: two users, each on two devices, list their devices", opts, async () => {
    const alice = await registerUser({ prefix: "alice", deviceName: "alice phone" });
    const bob = await registerUser({ prefix: "bob", deviceName: "bob phone" });
    const alice2 = await loginDevice(alice, { deviceName: "alice laptop" });
    const bob2 = await loginDevice(bob, { deviceName: "bob laptop" });

    const all = [alice, alice2, bob, bob2];
    assert.equal(new Set(all.map((s) => s.accessToken)).size, 4, "access tokens must be distinct");
    assert.notEqual(alice.deviceId, alice2.deviceId);
    assert.notEqual(bob.deviceId, bob2.deviceId);

    await assertWhoami(alice.client, alice, "alice device 1");
    await assertWhoami(alice2.client, alice2, "alice device 2");
    await assertWhoami(bob.client, bob, "bob device 1");
    await assertWhoami(bob2.client, bob2, "bob device 2");

    for (const [user, second, names] of [
        [alice, alice2, ["alice phone", "alice laptop"]],
        [bob, bob2, ["bob phone", "bob laptop"]],
    ]) {
        for (const viewer of [user.client, second.client]) {
            const { devices } = await viewer.getDevices();
            const byId = Object.fromEntries(devices.map((d) => [d.device_id, d]));
            assert.deepEqual(
                Object.keys(byId).sort(),
                [user.deviceId, second.deviceId].sort(),
                `${user.userId} must see exactly its two devices`,
            );
            assert.equal(byId[user.deviceId].display_name, names[0]);
            assert.equal(byId[second.deviceId].display_name, names[1]);
        }
        const one = await user.client.getDevice(second.deviceId);
        assert.equal(one.device_id, second.deviceId);
        assert.equal(one.display_name, names[1]);
    }

    // A user cannot see someone else's device.
    const err = await expectMatrixError(() => alice.client.getDevice(bob.deviceId), { status: 404 }, "GET bob's device as alice");
    assertProperMatrixError(err, "GET bob's device as alice");
});

test("devices: rename a device with PUT /devices/{id}", opts, async () => {
    const alice = await registerUser({ prefix: "rename" });
    const alice2 = await loginDevice(alice, { deviceName: "old name" });

    const newName = `renamed ${randomBytes(4).toString("hex")}`;
    await alice.client.setDeviceDetails(alice2.deviceId, { display_name: newName });

    const seenByOther = await alice.client.getDevice(alice2.deviceId);
    assert.equal(seenByOther.display_name, newName, "rename visible from the other device");
    const seenBySelf = await alice2.client.getDevice(alice2.deviceId);
    assert.equal(seenBySelf.display_name, newName, "rename visible from the renamed device");
    const { devices } = await alice2.client.getDevices();
    assert.equal(devices.find((d) => d.device_id === alice2.deviceId)?.display_name, newName);
    // The other device keeps its name.
    assert.equal(devices.find((d) => d.device_id === alice.deviceId)?.display_name, "e2e rename");

    // The renamed device still works.
    await assertWhoami(alice2.client, alice2, "renamed device");
});

test("devices: DELETE /devices/{id} needs UIA with m.login.password and revokes the token", opts, async () => {
    const alice = await registerUser({ prefix: "deldev" });
    const alice2 = await loginDevice(alice);

    // 1. No auth: 401 with flows [m.login.password] and a session.
    const err = await expectMatrixError(
        () => alice.client.deleteDevice(alice2.deviceId),
        { status: 401 },
        "DELETE device without auth",
    );
    const { session } = assertUiaChallenge(err, ["m.login.password"], "DELETE device");

    // 2. Wrong password: 401 again, now with errcode M_FORBIDDEN, and the device survives.
    const bad = await expectMatrixError(
        () => alice.client.deleteDevice(alice2.deviceId, passwordAuth(alice.userId, "wrong-password", session)),
        { status: 401, errcode: "M_FORBIDDEN" },
        "DELETE device with a wrong password",
    );
    assert.ok(Array.isArray(bad.data.flows), "failed UIA stage must still return flows");
    assert.ok((await deviceIds(alice.client)).includes(alice2.deviceId), "device deleted despite wrong password");
    await assertWhoami(alice2.client, alice2, "device after failed delete");

    // 3. Right password with the session: deleted.
    await alice.client.deleteDevice(alice2.deviceId, passwordAuth(alice.userId, alice.password, session));

    assert.deepEqual(await deviceIds(alice.client), [alice.deviceId], "only the first device must remain");
    await expectMatrixError(() => alice.client.getDevice(alice2.deviceId), { status: 404 }, "GET deleted device");
    await assertTokenRevoked(alice2.accessToken, "deleted device");
    await assertWhoami(alice.client, alice, "surviving device");
});

test("devices: POST /delete_devices with UIA deletes several devices", opts, async () => {
    const alice = await registerUser({ prefix: "delmany" });
    const d2 = await loginDevice(alice);
    const d3 = await loginDevice(alice);
    assert.equal((await deviceIds(alice.client)).length, 3);

    const { challenge } = await withPasswordUia(
        (auth) => alice.client.deleteMultipleDevices([d2.deviceId, d3.deviceId], auth),
        { user: alice.userId, password: alice.password },
        "delete_devices",
    );
    assert.ok(challenge.session);

    assert.deepEqual(await deviceIds(alice.client), [alice.deviceId]);
    await assertTokenRevoked(d2.accessToken, "device 2 after delete_devices");
    await assertTokenRevoked(d3.accessToken, "device 3 after delete_devices");
});

test("profile: display name set by one user is read back by another via GET /profile", opts, async () => {
    const alice = await registerUser({ prefix: "profile-a" });
    const bob = await registerUser({ prefix: "profile-b" });

    const name = `Alice ${randomBytes(4).toString("hex")}`;
    await alice.client.setDisplayName(name);

    const full = await bob.client.getProfileInfo(alice.userId);
    assert.equal(full.displayname, name, "GET /profile/{alice} as bob");
    const field = await bob.client.getProfileInfo(alice.userId, "displayname");
    assert.equal(field.displayname, name, "GET /profile/{alice}/displayname as bob");

    // Changing it again is visible too.
    const name2 = `${name} (2)`;
    await alice.client.setDisplayName(name2);
    assert.equal((await bob.client.getProfileInfo(alice.userId, "displayname")).displayname, name2);

    const err = await expectMatrixError(
        () => bob.client.getProfileInfo(userIdFor(uniqueUsername("ghost"))),
        { status: 404, errcode: "M_NOT_FOUND" },
        "GET /profile of a user that does not exist",
    );
    assertProperMatrixError(err);
});

test("account data: global account data round-trips and is private", opts, async () => {
    const alice = await registerUser({ prefix: "acct" });
    const alice2 = await loginDevice(alice);
    const bob = await registerUser({ prefix: "acct-b" });
    const type = `org.example.e2e.config.${randomBytes(4).toString("hex")}`;

    // Not set yet: 404 M_NOT_FOUND (the SDK maps that to null).
    await expectMatrixError(
        () => alice.client.http.authedRequest(Method.Get, accountDataPath(alice.userId, type)),
        { status: 404, errcode: "M_NOT_FOUND" },
        "GET unset account data",
    );
    assert.equal(await alice.client.getAccountDataFromServer(type), null);

    const content = { theme: "dark", nested: { list: [1, 2, 3], flag: true }, unicode: "ünï ☃" };
    await alice.client.setAccountData(type, content);
    assert.deepEqual(await alice.client.getAccountDataFromServer(type), content, "read back on the same device");
    assert.deepEqual(await alice2.client.getAccountDataFromServer(type), content, "read back on another device");

    // A second PUT replaces the content (no merge).
    const content2 = { theme: "light" };
    await alice2.client.setAccountData(type, content2);
    assert.deepEqual(await alice.client.getAccountDataFromServer(type), content2, "overwrite must replace content");

    // Another user can neither read nor write it.
    await expectMatrixError(
        () => bob.client.http.authedRequest(Method.Get, accountDataPath(alice.userId, type)),
        { status: 403, errcode: "M_FORBIDDEN" },
        "bob reading alice's account data",
    );
    await expectMatrixError(
        () => bob.client.http.authedRequest(Method.Put, accountDataPath(alice.userId, type), undefined, { x: 1 }),
        { status: 403, errcode: "M_FORBIDDEN" },
        "bob writing alice's account data",
    );
    assert.deepEqual(await alice.client.getAccountDataFromServer(type), content2, "bob's PUT must not land");
});

test("account data: server-managed types m.push_rules / m.fully_read are refused with 405", opts, async () => {
    const alice = await registerUser({ prefix: "acct405" });
    for (const type of ["m.push_rules", "m.fully_read"]) {
        await expectMatrixError(
            () => alice.client.http.authedRequest(Method.Put, accountDataPath(alice.userId, type), undefined, {}),
            { status: 405, errcode: "M_BAD_JSON" },
            `PUT global account data ${type}`,
        );
    }
});

test("account data: per-room account data via PUT/GET /user/{id}/rooms/{roomId}/account_data", opts, async (t) => {
    const alice = await registerUser({ prefix: "roomacct" });
    const bob = await registerUser({ prefix: "roomacct-b" });
    const type = `org.example.e2e.room.${randomBytes(4).toString("hex")}`;
    const content = { pinned: ["a", "b"], n: 7 };

    // An invalid room ID is a 400 M_INVALID_PARAM.
    await expectMatrixError(
        () => alice.client.setRoomAccountData("not-a-room-id", type, content),
        { status: 400, errcode: "M_INVALID_PARAM" },
        "PUT room account data with an invalid room ID",
    );

    // A well-formed room ID that need not exist on the server.
    const roomId = `!e2e${randomBytes(8).toString("hex")}:${SERVER_NAME}`;
    let stored = false;
    try {
        await alice.client.setRoomAccountData(roomId, type, content);
        stored = true;
    } catch (err) {
        // Refusing an unknown room is allowed, but it must be a proper Matrix error.
        assertProperMatrixError(err, "PUT room account data for an unknown room");
        t.diagnostic(`server refused account data for unknown room: ${err.httpStatus} ${err.errcode}`);
    }

    if (!stored) {
        // Fall back to a room that exists, if the server can create one yet.
        let created;
        try {
            created = await alice.client.createRoom({ preset: "private_chat" });
        } catch (err) {
            t.diagnostic(`createRoom unavailable (${err.httpStatus} ${err.errcode}); round-trip not checked`);
            return;
        }
        return roundTrip(created.room_id);
    }
    return roundTrip(roomId);

    async function roundTrip(rid) {
        if (rid !== roomId) await alice.client.setRoomAccountData(rid, type, content);
        const got = await alice.client.http.authedRequest(Method.Get, roomAccountDataPath(alice.userId, rid, type));
        assert.deepEqual(got, content, "room account data read back");

        // Overwrite replaces.
        await alice.client.setRoomAccountData(rid, type, { n: 8 });
        assert.deepEqual(
            await alice.client.http.authedRequest(Method.Get, roomAccountDataPath(alice.userId, rid, type)),
            { n: 8 },
        );

        // Room-scoped data does not leak into global account data (no inheritance either way).
        await expectMatrixError(
            () => alice.client.http.authedRequest(Method.Get, accountDataPath(alice.userId, type)),
            { status: 404, errcode: "M_NOT_FOUND" },
            "GET global account data of a type only set per room",
        );
        // Unknown type in this room: 404.
        await expectMatrixError(
            () => alice.client.http.authedRequest(Method.Get, roomAccountDataPath(alice.userId, rid, `${type}.unset`)),
            { status: 404, errcode: "M_NOT_FOUND" },
            "GET unset room account data",
        );
        // Private to the user.
        await expectMatrixError(
            () => bob.client.http.authedRequest(Method.Get, roomAccountDataPath(alice.userId, rid, type)),
            { status: 403, errcode: "M_FORBIDDEN" },
            "bob reading alice's room account data",
        );
        // Server-managed type.
        await expectMatrixError(
            () => alice.client.setRoomAccountData(rid, "m.fully_read", { event_id: "$x" }),
            { status: 405, errcode: "M_BAD_JSON" },
            "PUT room account data m.fully_read",
        );
    }
});

test("logout: the old token is refused with 401 M_UNKNOWN_TOKEN and the device is gone", opts, async () => {
    const alice = await registerUser({ prefix: "logout" });
    const alice2 = await loginDevice(alice);
    await assertWhoami(alice2.client, alice2, "before logout");

    assert.deepEqual(await alice2.client.logout(), {});

    // The same client, still holding the old token...
    await expectMatrixError(() => alice2.client.whoami(), { status: 401, errcode: "M_UNKNOWN_TOKEN" }, "whoami after logout");
    // ...and a fresh one with it.
    await assertTokenRevoked(alice2.accessToken, "logged-out token");

    // Other sessions are unaffected; the logged-out device is deleted.
    await assertWhoami(alice.client, alice, "other device after logout");
    assert.deepEqual(await deviceIds(alice.client), [alice.deviceId]);
});

test("logout/all: every device's token is revoked", opts, async () => {
    const alice = await registerUser({ prefix: "logoutall" });
    const d2 = await loginDevice(alice);
    const d3 = await loginDevice(alice);
    const bob = await registerUser({ prefix: "logoutall-b" });

    // The SDK has no method for POST /logout/all.
    assert.deepEqual(await d2.client.http.authedRequest(Method.Post, "/logout/all"), {});

    for (const [s, what] of [
        [alice, "registration device"],
        [d2, "device that called logout/all"],
        [d3, "third device"],
    ]) {
        await assertTokenRevoked(s.accessToken, what);
    }

    // Another user is untouched.
    await assertWhoami(bob.client, bob, "other user after logout/all");

    // The account itself still works, with only the new device listed.
    const fresh = await loginDevice(alice);
    assert.deepEqual(await deviceIds(fresh.client), [fresh.deviceId]);
});

test("password: change via POST /account/password with UIA; old password refused, new one works", opts, async () => {
    const alice = await registerUser({ prefix: "passwd" });
    const alice2 = await loginDevice(alice);
    const newPassword = randomPassword();

    const err = await expectMatrixError(
        () => alice.client.setPassword(undefined, newPassword),
        { status: 401 },
        "password change without auth",
    );
    const { session } = assertUiaChallenge(err, ["m.login.password"], "password change");

    // Wrong current password is refused and changes nothing.
    await expectMatrixError(
        () => alice.client.setPassword(passwordAuth(alice.userId, "not-my-password", session), newPassword),
        { status: 401, errcode: "M_FORBIDDEN" },
        "password change with a wrong current password",
    );
    await loginDevice(alice); // old password still valid at this point

    assert.deepEqual(
        await alice.client.setPassword(passwordAuth(alice.userId, alice.password, session), newPassword),
        {},
    );

    await expectMatrixError(
        () => loginDevice(alice),
        { status: 403, errcode: "M_FORBIDDEN" },
        "login with the old password",
    );
    const fresh = await loginDevice(alice, { password: newPassword });
    await assertWhoami(fresh.client, fresh, "login with the new password");

    // logout_devices defaults to true: other sessions are revoked, the requesting one is kept.
    await assertWhoami(alice.client, alice, "device that changed the password");
    await assertTokenRevoked(alice2.accessToken, "other device after password change");
});

test("password: logout_devices=false keeps other sessions", opts, async () => {
    const alice = await registerUser({ prefix: "passwd-keep" });
    const alice2 = await loginDevice(alice);
    const newPassword = randomPassword();

    await withPasswordUia(
        (auth) => alice.client.setPassword(auth, newPassword, false),
        { user: alice.userId, password: alice.password },
        "password change (logout_devices=false)",
    );
    await assertWhoami(alice2.client, alice2, "other device after password change without logout");
    await loginDevice(alice, { password: newPassword });
});

test("shared-secret registration via /_synapse/admin/v1/register", opts, async (t) => {
    if (!SHARED_SECRET) {
        t.skip("HS_E2E_SHARED_SECRET is not set");
        return;
    }
    const username = uniqueUsername("admreg");
    const password = randomPassword();

    const { nonce, response } = await sharedSecretRegister({ username, password, admin: false });
    assert.equal(response.user_id, userIdFor(username), "shared-secret register: user_id");
    assert.equal(typeof response.access_token, "string", "shared-secret register: access_token");

    const client = makeClient({ accessToken: response.access_token });
    const me = await client.whoami();
    assert.equal(me.user_id, userIdFor(username), "whoami with the shared-secret registration token");
    if (response.device_id !== undefined) assert.equal(me.device_id, response.device_id);

    // The account has the password it was registered with.
    const login = await loginDevice({ username, password, userId: userIdFor(username) });
    await assertWhoami(login.client, login, "password login of the shared-secret user");

    // A nonce is single-use.
    const reuser = uniqueUsername("admreg-reuse");
    const reuse = await expectMatrixError(
        () => sharedSecretRegister({ username: reuser, password, nonce }),
        {},
        "shared-secret register reusing a nonce",
    );
    assertProperMatrixError(reuse, "reused nonce");

    // A wrong MAC is refused with 403 and creates no account.
    const badUser = uniqueUsername("admreg-bad");
    const { nonce: nonce2 } = await sharedSecretNonce();
    const badMac = sharedSecretMac("not-the-secret", { nonce: nonce2, username: badUser, password });
    const bad = await expectMatrixError(
        () => sharedSecretRegister({ username: badUser, password, nonce: nonce2, mac: badMac }),
        { status: 403 },
        "shared-secret register with a wrong MAC",
    );
    assertProperMatrixError(bad, "wrong MAC");
    await expectMatrixError(
        () => loginDevice({ username: badUser, password, userId: userIdFor(badUser) }),
        { status: 403, errcode: "M_FORBIDDEN" },
        "login as the user a bad MAC tried to create",
    );
});

test("refresh tokens: login with refresh_token:true, POST /refresh issues a working token", opts, async () => {
    const alice = await registerUser({ prefix: "refresh" });
    const session = await loginDevice(alice, { refreshToken: true });

    assert.equal(typeof session.refreshToken, "string", `login: no refresh_token in ${JSON.stringify(session.response)}`);
    assert.ok(session.refreshToken.length > 0);
    const expires = session.response.expires_in_ms;
    assert.ok(Number.isInteger(expires) && expires > 0, `login: expires_in_ms must be a positive integer, got ${expires}`);
    await assertWhoami(session.client, session, "token from refresh-capable login");

    // POST /refresh needs no access token: use a bare client.
    const refresher = makeClient();
    const r1 = await refresher.refreshToken(session.refreshToken);
    assert.equal(typeof r1.access_token, "string", `refresh: no access_token in ${JSON.stringify(r1)}`);
    assert.notEqual(r1.access_token, session.accessToken, "refresh must issue a new access token");
    if (r1.expires_in_ms !== undefined) {
        assert.ok(Number.isInteger(r1.expires_in_ms) && r1.expires_in_ms > 0, "refresh: expires_in_ms");
    }

    // The new token works, for the same user and device.
    const c1 = makeClient({ accessToken: r1.access_token });
    await assertWhoami(c1, session, "refreshed token");

    if (r1.refresh_token !== undefined) {
        // Rotation: once the new access token has been used, the old refresh token is revoked...
        assert.equal(typeof r1.refresh_token, "string");
        assert.notEqual(r1.refresh_token, session.refreshToken, "a returned refresh token must be new");
        await expectMatrixError(
            () => refresher.refreshToken(session.refreshToken),
            { status: 401, errcode: "M_UNKNOWN_TOKEN" },
            "reusing a refresh token after its successor was used",
        );
        // ...and the new refresh token works.
        const r2 = await refresher.refreshToken(r1.refresh_token);
        await assertWhoami(makeClient({ accessToken: r2.access_token }), session, "second refreshed token");
    } else {
        // No new refresh token: the old one can be re-used.
        const r2 = await refresher.refreshToken(session.refreshToken);
        await assertWhoami(makeClient({ accessToken: r2.access_token }), session, "second refreshed token");
    }

    // A made-up refresh token is refused.
    await expectMatrixError(
        () => refresher.refreshToken(`bogus_${randomBytes(16).toString("hex")}`),
        { status: 401, errcode: "M_UNKNOWN_TOKEN" },
        "refresh with a made-up refresh token",
    );
});
