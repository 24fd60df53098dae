// Media: a picture and a voice note sent through matrix-js-sdk and received by another user.
//
// Run: HS_E2E_BASE_URL=http://127.0.0.1:18008 HS_E2E_SERVER_NAME=localhost \
//      node --test --test-force-exit --test-concurrency=1 media.test.mjs
//
// Alice uploads a PNG (red left half, blue right half) and an Ogg/Opus voice note with the SDK's
// uploadContent, sends them as m.image and m.audio; Bob reads the events, downloads both through
// the authenticated media endpoints (the URLs the SDK builds with mxcUrlToHttp) and gets the same
// bytes, and asks for thumbnails, which must have the requested size and the image's pixels. The
// PNG and Ogg files are made here (no fixtures): a PNG encoder/decoder of ~60 lines on node:zlib,
// and an Ogg Opus stream of silence with correct page checksums.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { deflateSync, inflateSync } from "node:zlib";

import {
    SERVER_NAME,
    TEST_TIMEOUT_MS,
    createRoom,
    inviteAndJoin,
    newUser,
    requireServer,
    stopAllClients,
} from "./helpers.mjs";

await requireServer();

afterEach(() => stopAllClients());

const opts = { timeout: TEST_TIMEOUT_MS };

// ---------------------------------------------------------------------------
// PNG

const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
        let c = n;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        t[n] = c >>> 0;
    }
    return t;
})();

function crc32(buf) {
    let c = 0xffffffff;
    for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
}

/** An 8-bit RGB PNG of w x h whose pixel (x, y) is pixel(x, y) = [r, g, b]. */
function encodePNG(w, h, pixel) {
    const raw = Buffer.alloc((w * 3 + 1) * h);
    for (let y = 0; y < h; y++) {
        raw[y * (w * 3 + 1)] = 0; // filter: none
        for (let x = 0; x < w; x++) {
            const [r, g, b] = pixel(x, y);
            const i = y * (w * 3 + 1) + 1 + x * 3;
            raw[i] = r;
            raw[i + 1] = g;
            raw[i + 2] = b;
        }
    }
    const chunk = (type, data) => {
        const len = Buffer.alloc(4);
        len.writeUInt32BE(data.length);
        const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
        const crc = Buffer.alloc(4);
        crc.writeUInt32BE(crc32(td));
        return Buffer.concat([len, td, crc]);
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(w, 0);
    ihdr.writeUInt32BE(h, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // RGB
    return Buffer.concat([
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        chunk("IHDR", ihdr),
        chunk("IDAT", deflateSync(raw)),
        chunk("IEND", Buffer.alloc(0)),
    ]);
}

/** Decodes an 8-bit RGB or RGBA, non-interlaced PNG: {width, height, at(x, y) -> [r, g, b, a]}. */
function decodePNG(buf) {
    assert.equal(buf.subarray(0, 8).toString("hex"), "89504e470d0a1a0a", "not a PNG");
    let off = 8;
    let width, height, colorType;
    const idat = [];
    while (off < buf.length) {
        const len = buf.readUInt32BE(off);
        const type = buf.toString("ascii", off + 4, off + 8);
        const data = buf.subarray(off + 8, off + 8 + len);
        if (type === "IHDR") {
            width = data.readUInt32BE(0);
            height = data.readUInt32BE(4);
            assert.equal(data[8], 8, "PNG bit depth");
            colorType = data[9];
            assert.ok(colorType === 2 || colorType === 6, `PNG colour type ${colorType}`);
            assert.equal(data[12], 0, "interlaced PNG");
        } else if (type === "IDAT") {
            idat.push(data);
        }
        off += 12 + len;
    }
    const bpp = colorType === 6 ? 4 : 3;
    const stride = width * bpp;
    const raw = inflateSync(Buffer.concat(idat));
    const px = Buffer.alloc(stride * height);
    for (let y = 0; y < height; y++) {
        const filter = raw[y * (stride + 1)];
        for (let i = 0; i < stride; i++) {
            const x = raw[y * (stride + 1) + 1 + i];
            const a = i >= bpp ? px[y * stride + i - bpp] : 0;
            const b = y > 0 ? px[(y - 1) * stride + i] : 0;
            const c = i >= bpp && y > 0 ? px[(y - 1) * stride + i - bpp] : 0;
            let v;
            switch (filter) {
                case 0: v = x; break;
                case 1: v = x + a; break;
                case 2: v = x + b; break;
                case 3: v = x + ((a + b) >> 1); break;
                case 4: {
                    const p = a + b - c;
                    const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
                    v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
                    break;
                }
                default: assert.fail(`PNG filter ${filter}`);
            }
            px[y * stride + i] = v & 0xff;
        }
    }
    return {
        width,
        height,
        at: (x, y) => {
            const i = y * stride + x * bpp;
            return [px[i], px[i + 1], px[i + 2], bpp === 4 ? px[i + 3] : 255];
        },
    };
}

// ---------------------------------------------------------------------------
// Ogg Opus: an identification header, a comment header and `frames` 20 ms frames of silence.

const OGG_CRC = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
        let c = n << 24;
        for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
        t[n] = c >>> 0;
    }
    return t;
})();

function oggPage(packet, { serial, seq, granule, flags }) {
    const segs = [];
    let n = packet.length;
    while (n >= 255) {
        segs.push(255);
        n -= 255;
    }
    segs.push(n);
    const header = Buffer.alloc(27 + segs.length);
    header.write("OggS", 0, "ascii");
    header[5] = flags;
    header.writeBigUInt64LE(BigInt(granule), 6);
    header.writeUInt32LE(serial, 14);
    header.writeUInt32LE(seq, 18);
    header[26] = segs.length;
    Buffer.from(segs).copy(header, 27);
    const page = Buffer.concat([header, packet]);
    let crc = 0;
    for (const b of page) crc = ((crc << 8) ^ OGG_CRC[((crc >>> 24) ^ b) & 0xff]) >>> 0;
    page.writeUInt32LE(crc, 22);
    return page;
}

function oggOpusSilence(frames) {
    const serial = 0x1e2e3e4e;
    const head = Buffer.alloc(19);
    head.write("OpusHead", 0, "ascii");
    head[8] = 1; // version
    head[9] = 1; // channels
    head.writeUInt16LE(312, 10); // pre-skip
    head.writeUInt32LE(48000, 12); // input sample rate
    const vendor = Buffer.from("hearth e2e", "ascii");
    const tags = Buffer.alloc(8 + 4 + vendor.length + 4);
    tags.write("OpusTags", 0, "ascii");
    tags.writeUInt32LE(vendor.length, 8);
    vendor.copy(tags, 12);
    const pages = [
        oggPage(head, { serial, seq: 0, granule: 0, flags: 2 }),
        oggPage(tags, { serial, seq: 1, granule: 0, flags: 0 }),
    ];
    for (let i = 0; i < frames; i++) {
        const silence = Buffer.from([0xf8, 0xff, 0xfe]); // CELT 20 ms frame, silence
        pages.push(oggPage(silence, { serial, seq: 2 + i, granule: 312 + (i + 1) * 960, flags: i === frames - 1 ? 4 : 0 }));
    }
    return Buffer.concat(pages);
}

// ---------------------------------------------------------------------------

/** GET url with bob's token; returns {status, headers, body: Buffer}. */
async function fetchMedia(url, token) {
    const res = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

const red = ([r, g, b]) => r > 200 && g < 60 && b < 60;
const blue = ([r, g, b]) => b > 200 && r < 60 && g < 60;

test("a picture and a voice note reach another user byte-identical, with real thumbnails", opts, async () => {
    const alice = await newUser("media-alice");
    const bob = await newUser("media-bob");
    const roomId = await createRoom(alice, { name: "media" });
    await inviteAndJoin(roomId, alice, bob);

    const config = await bob.client.getMediaConfig(true);
    assert.ok(config["m.upload.size"] >= 1 << 20, `m.upload.size ${config["m.upload.size"]}`);

    const W = 400;
    const H = 200;
    const png = encodePNG(W, H, (x) => (x < W / 2 ? [255, 0, 0] : [0, 0, 255]));
    const ogg = oggOpusSilence(50); // one second
    const image = await alice.client.uploadContent(png, { type: "image/png", name: "split.png" });
    const voice = await alice.client.uploadContent(ogg, { type: "audio/ogg", name: "voice.ogg" });
    for (const u of [image, voice]) {
        assert.match(u.content_uri, new RegExp(`^mxc://${SERVER_NAME.replace(/[.]/g, "\\.")}/[A-Za-z0-9_-]+$`));
    }

    const imageEvent = await alice.client.sendMessage(roomId, {
        msgtype: "m.image",
        body: "split.png",
        url: image.content_uri,
        info: { mimetype: "image/png", w: W, h: H, size: png.length },
    });
    const audioEvent = await alice.client.sendMessage(roomId, {
        msgtype: "m.audio",
        body: "voice.ogg",
        url: voice.content_uri,
        info: { mimetype: "audio/ogg", duration: 1000, size: ogg.length },
        "org.matrix.msc3245.voice": {},
        "org.matrix.msc1767.audio": { duration: 1000 },
    });

    // Bob reads both events and downloads what they point at.
    const got = {};
    for (const { event_id: id } of [imageEvent, audioEvent]) {
        const ev = await bob.client.fetchRoomEvent(roomId, id);
        got[ev.content.msgtype] = ev.content;
    }
    assert.equal(got["m.image"].url, image.content_uri);
    assert.equal(got["m.audio"].url, voice.content_uri);

    const downloadURL = (mxc) => bob.client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, false, true);
    assert.match(downloadURL(image.content_uri), /\/_matrix\/client\/v1\/media\/download\//);

    const img = await fetchMedia(downloadURL(got["m.image"].url), bob.accessToken);
    assert.equal(img.status, 200, `image download: ${img.status} ${img.body}`);
    assert.ok(img.body.equals(png), "the downloaded image differs from the upload");
    assert.equal(img.headers.get("content-type"), "image/png");

    const audio = await fetchMedia(downloadURL(got["m.audio"].url), bob.accessToken);
    assert.equal(audio.status, 200, `audio download: ${audio.status} ${audio.body}`);
    assert.ok(audio.body.equals(ogg), "the downloaded voice note differs from the upload");
    assert.equal(audio.headers.get("content-type"), "audio/ogg");
    assert.match(audio.headers.get("content-disposition"), /^inline; filename="voice\.ogg"$/);

    // Seeking in the voice note: a Range request.
    const res = await fetch(downloadURL(voice.content_uri), {
        headers: { Authorization: `Bearer ${bob.accessToken}`, Range: "bytes=0-3" },
    });
    assert.equal(res.status, 206);
    assert.equal(Buffer.from(await res.arrayBuffer()).toString("ascii"), "OggS");

    // Thumbnails of the requested sizes, made from the image's pixels.
    for (const [w, h, method, wantW, wantH] of [
        [96, 96, "crop", 96, 96],
        [320, 240, "scale", 320, 160],
    ]) {
        const url = bob.client.mxcUrlToHttp(got["m.image"].url, w, h, method, false, false, true);
        assert.match(url, /\/_matrix\/client\/v1\/media\/thumbnail\//);
        const t = await fetchMedia(url, bob.accessToken);
        assert.equal(t.status, 200, `thumbnail ${w}x${h} ${method}: ${t.status} ${t.body}`);
        assert.equal(t.headers.get("content-type"), "image/png");
        const th = decodePNG(t.body);
        assert.deepEqual([th.width, th.height], [wantW, wantH], `thumbnail ${w}x${h} ${method} size`);
        for (const y of [0, Math.floor(th.height / 2), th.height - 1]) {
            assert.ok(red(th.at(1, y)), `thumbnail ${w}x${h} ${method}: left pixel at y=${y} is ${th.at(1, y)}`);
            assert.ok(blue(th.at(th.width - 2, y)), `thumbnail ${w}x${h} ${method}: right pixel at y=${y} is ${th.at(th.width - 2, y)}`);
        }
    }

    // The authenticated endpoints need a token.
    const anon = await fetchMedia(downloadURL(image.content_uri), undefined);
    assert.equal(anon.status, 401);
});
