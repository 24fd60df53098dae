// Package mediaapi is the content repository (spec: "Content repository"): uploads, downloads,
// thumbnails, URL previews, the cache of other servers' media, and the stores the bytes live in.
//
//	upload.go     POST /upload, POST /create + PUT /upload/{server}/{id}: spool, hash, store, one row
//	download.go   GET download (authenticated and the frozen legacy form), safe-serving headers
//	thumbnail.go  GET thumbnail: sizes, caching, pre-generation; resize.go does the pixels
//	preview.go    GET preview_url: OpenGraph through homeserver/netguard
//	remote.go     RemoteFetcher, filled in by federation; the remote media cache
//	federation.go GET /_matrix/federation/v1/media/download and /thumbnail: our media for servers
//	admin.go      delete an item, purge the remote cache
//	blobs.go      the Blobs interface and the filesystem store; s3.go the S3 store
//
// Content is stored once per SHA-256 (Blobs); what media IDs mean is in the database (tables
// media, media_thumbnails, media_url_previews). docs/media.md describes the behaviour.
package mediaapi
