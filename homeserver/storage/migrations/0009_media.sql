-- The media repository (module "Content repository", mediaapi/). The bytes live in a blob store
-- (a directory or an S3 bucket) under the SHA-256 of the content, so identical content is stored
-- once however many media IDs name it; these tables hold what the IDs mean.

-- One row per mxc://server_name/media_id: local uploads and the cache of remote media.
-- sha256 is NULL while an asynchronous upload (POST /_matrix/media/v1/create) waits for its
-- content; expires_ts is then when the unused ID lapses. restricted is TRUE for media stored while
-- unauthenticated access was frozen (the spec's "freeze"): the deprecated /_matrix/media/*
-- download and thumbnail endpoints do not serve it. uploader is the local user who uploaded it
-- ('' for remote media and URL-preview images), and counts against that user's quota.
-- last_access_ts (remote media) is when the cached copy was last served, for purging.
CREATE TABLE media (
    server_name    TEXT NOT NULL,
    media_id       TEXT NOT NULL,
    sha256         TEXT,
    size           BIGINT NOT NULL DEFAULT 0,
    content_type   TEXT NOT NULL DEFAULT '',
    file_name      TEXT NOT NULL DEFAULT '',
    uploader       TEXT NOT NULL DEFAULT '',
    created_ts     BIGINT NOT NULL,
    expires_ts     BIGINT,
    restricted     BOOLEAN NOT NULL,
    remote         BOOLEAN NOT NULL DEFAULT FALSE,
    last_access_ts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (server_name, media_id)
);
-- Whether a blob is still referenced when a media item goes.
CREATE INDEX media_sha256 ON media (sha256);
-- A user's quota (sum of sizes) and pending uploads.
CREATE INDEX media_uploader ON media (uploader);

-- Thumbnails, generated once per (media, size, method) and kept in the blob store like content.
-- width and height are the size the thumbnail was made for (a configured size or the requested
-- one); the image itself may be smaller (scale keeps the aspect ratio, nothing is upscaled).
CREATE TABLE media_thumbnails (
    server_name  TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    method       TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method),
    -- A thumbnail finished after its media item was deleted is refused, not left behind.
    FOREIGN KEY (server_name, media_id) REFERENCES media (server_name, media_id) ON DELETE CASCADE
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);

-- URL previews (GET preview_url), kept for a while so a link posted in a busy room is fetched
-- once: the OpenGraph JSON answered, by URL.
CREATE TABLE media_url_previews (
    url        TEXT NOT NULL PRIMARY KEY,
    response   TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
