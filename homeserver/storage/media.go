package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Media is one media item, mxc://ServerName/MediaID: a local upload or a cached remote file.
// SHA256 is "" while an asynchronous upload has not delivered its content yet.
type Media struct {
	ServerName   string
	MediaID      string
	SHA256       string
	Size         int64
	ContentType  string
	FileName     string
	Uploader     string // local user ID; "" for remote media and URL-preview images
	CreatedTS    int64
	ExpiresTS    int64 // pending uploads: when the unused ID lapses; 0 otherwise
	Restricted   bool  // stored during the freeze: authenticated endpoints only
	Remote       bool
	LastAccessTS int64
}

// Pending reports whether the item waits for the content of an asynchronous upload.
func (m Media) Pending() bool { return m.SHA256 == "" }

// MediaThumbnail is a thumbnail of a media item, made for Width x Height with Method.
type MediaThumbnail struct {
	ServerName  string
	MediaID     string
	Width       int64
	Height      int64
	Method      string
	SHA256      string
	Size        int64
	ContentType string
	CreatedTS   int64
}

const mediaColumns = `server_name, media_id, sha256, size, content_type, file_name, uploader, created_ts, expires_ts,
	restricted, remote, last_access_ts`

func scanMedia(r interface{ Scan(...any) error }) (Media, error) {
	var m Media
	var sha sql.NullString
	var expires sql.NullInt64
	err := r.Scan(&m.ServerName, &m.MediaID, &sha, &m.Size, &m.ContentType, &m.FileName, &m.Uploader, &m.CreatedTS,
		&expires, &m.Restricted, &m.Remote, &m.LastAccessTS)
	m.SHA256, m.ExpiresTS = sha.String, expires.Int64
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	return m, err
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullInt(n int64) sql.NullInt64 { return sql.NullInt64{Int64: n, Valid: n != 0} }

// InsertMedia adds a media item (with content, or pending when SHA256 is empty); ErrConflict if
// the ID is taken.
func (c Conn) InsertMedia(ctx context.Context, m Media) error {
	_, err := c.exec(ctx, `INSERT INTO media (`+mediaColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		m.ServerName, m.MediaID, nullString(m.SHA256), m.Size, m.ContentType, m.FileName, m.Uploader, m.CreatedTS,
		nullInt(m.ExpiresTS), m.Restricted, m.Remote, m.LastAccessTS)
	return err
}

// Media reads one media item.
func (c Conn) Media(ctx context.Context, serverName, mediaID string) (Media, error) {
	return scanMedia(c.row(ctx, `SELECT `+mediaColumns+` FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID))
}

// FillPendingMedia gives a pending item (created by uploader, not expired at now) its content.
// ErrNotFound when no such pending item exists: the caller tells the reasons apart by reading it.
func (c Conn) FillPendingMedia(ctx context.Context, m Media, now int64) error {
	return c.execOne(ctx, `UPDATE media SET sha256 = $3, size = $4, content_type = $5, file_name = $6, created_ts = $7, expires_ts = NULL
		WHERE server_name = $1 AND media_id = $2 AND sha256 IS NULL AND uploader = $8 AND expires_ts > $7`,
		m.ServerName, m.MediaID, m.SHA256, m.Size, m.ContentType, m.FileName, now, m.Uploader)
}

// PendingMediaCount counts a user's asynchronous uploads still waiting for content at now.
func (c Conn) PendingMediaCount(ctx context.Context, uploader string, now int64) (int64, error) {
	var n int64
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts > $2`,
		[]any{uploader, now}, &n)
	return n, err
}

// MediaBytesOf is the total size of the media a user uploaded (their quota use).
func (c Conn) MediaBytesOf(ctx context.Context, uploader string) (int64, error) {
	var n int64
	err := c.scanOne(ctx, `SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1`, []any{uploader}, &n)
	return n, err
}

// DeleteMedia removes a media item and its thumbnails and returns the blobs (SHA-256s) they
// named, for the caller to delete those no longer referenced (BlobReferenced) after commit.
func (c Conn) DeleteMedia(ctx context.Context, serverName, mediaID string) ([]string, error) {
	m, err := c.Media(ctx, serverName, mediaID)
	if err != nil {
		return nil, err
	}
	hashes, err := collect(ctx, c, `SELECT sha256 FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`,
		[]any{serverName, mediaID}, func(r *sql.Rows) (string, error) {
			var s string
			return s, r.Scan(&s)
		})
	if err != nil {
		return nil, err
	}
	if m.SHA256 != "" {
		hashes = append(hashes, m.SHA256)
	}
	if _, err := c.exec(ctx, `DELETE FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`, serverName, mediaID); err != nil {
		return nil, err
	}
	if err := c.execOne(ctx, `DELETE FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID); err != nil {
		return nil, err
	}
	return hashes, nil
}

// BlobReferenced reports whether any media item or thumbnail still names the blob.
func (c Conn) BlobReferenced(ctx context.Context, sha256 string) (bool, error) {
	var n int64
	err := c.scanOne(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`,
		[]any{sha256}, &n)
	return n > 0, err
}

// ExpiredPendingMedia lists pending items whose IDs lapsed before now (at most limit).
func (c Conn) ExpiredPendingMedia(ctx context.Context, now int64, limit int) ([]Media, error) {
	return collect(ctx, c, `SELECT `+mediaColumns+` FROM media WHERE sha256 IS NULL AND expires_ts <= $1 LIMIT $2`,
		[]any{now, limit}, func(r *sql.Rows) (Media, error) { return scanMedia(r) })
}

// RemoteMediaBefore lists cached remote media last served before ts (at most limit).
func (c Conn) RemoteMediaBefore(ctx context.Context, ts int64, limit int) ([]Media, error) {
	return collect(ctx, c, `SELECT `+mediaColumns+` FROM media WHERE remote = TRUE AND last_access_ts < $1 LIMIT $2`,
		[]any{ts, limit}, func(r *sql.Rows) (Media, error) { return scanMedia(r) })
}

// TouchMedia records that a media item was served at ts.
func (c Conn) TouchMedia(ctx context.Context, serverName, mediaID string, ts int64) error {
	_, err := c.exec(ctx, `UPDATE media SET last_access_ts = $3 WHERE server_name = $1 AND media_id = $2`, serverName, mediaID, ts)
	return err
}

const thumbnailColumns = `server_name, media_id, width, height, method, sha256, size, content_type, created_ts`

// MediaThumbnail reads the thumbnail of a media item made for width x height with method.
func (c Conn) MediaThumbnail(ctx context.Context, serverName, mediaID string, width, height int64, method string) (MediaThumbnail, error) {
	var t MediaThumbnail
	err := c.scanOne(ctx, `SELECT `+thumbnailColumns+` FROM media_thumbnails
		WHERE server_name = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`,
		[]any{serverName, mediaID, width, height, method},
		&t.ServerName, &t.MediaID, &t.Width, &t.Height, &t.Method, &t.SHA256, &t.Size, &t.ContentType, &t.CreatedTS)
	return t, err
}

// InsertMediaThumbnail records a thumbnail; one made at the same time by another request wins
// silently (they are the same image).
func (c Conn) InsertMediaThumbnail(ctx context.Context, t MediaThumbnail) error {
	_, err := c.exec(ctx, `INSERT INTO media_thumbnails (`+thumbnailColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT DO NOTHING`, t.ServerName, t.MediaID, t.Width, t.Height, t.Method, t.SHA256, t.Size, t.ContentType, t.CreatedTS)
	return err
}

// MediaThumbnailCount counts the stored thumbnails of a media item.
func (c Conn) MediaThumbnailCount(ctx context.Context, serverName, mediaID string) (int64, error) {
	var n int64
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`,
		[]any{serverName, mediaID}, &n)
	return n, err
}

// URLPreview reads a stored URL preview: the JSON answered and when it was fetched.
func (c Conn) URLPreview(ctx context.Context, url string) (string, int64, error) {
	var body string
	var ts int64
	err := c.scanOne(ctx, `SELECT response, fetched_ts FROM media_url_previews WHERE url = $1`, []any{url}, &body, &ts)
	return body, ts, err
}

// PutURLPreview stores (or replaces) the preview of a URL.
func (c Conn) PutURLPreview(ctx context.Context, url, response string, ts int64) error {
	_, err := c.exec(ctx, `INSERT INTO media_url_previews (url, response, fetched_ts) VALUES ($1, $2, $3)
		ON CONFLICT (url) DO UPDATE SET response = excluded.response, fetched_ts = excluded.fetched_ts`, url, response, ts)
	return err
}

// DeleteURLPreviewsBefore forgets previews fetched before ts.
func (c Conn) DeleteURLPreviewsBefore(ctx context.Context, ts int64) error {
	_, err := c.exec(ctx, `DELETE FROM media_url_previews WHERE fetched_ts < $1`, ts)
	return err
}
