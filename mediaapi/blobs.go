package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hearthmx/homeserver/homeserver/config"
)

// Blobs stores content by its SHA-256 (lower-case hex): the same bytes are stored once, whatever
// media IDs and thumbnails name them. Implementations: a directory (fsBlobs) and an S3 bucket
// (s3Blobs).
type Blobs interface {
	// Put stores the complete file f (size bytes, hashing to sha) under sha. A blob already
	// stored under sha is kept. f is the caller's spool file; Put may move it away (the caller
	// removes it afterwards if it is still there).
	Put(ctx context.Context, sha string, f *os.File, size int64) error
	// Open returns the blob for reading, seekable for Range requests; ErrBlobNotFound if absent.
	Open(ctx context.Context, sha string) (Blob, error)
	// Delete removes the blob; an absent blob is not an error.
	Delete(ctx context.Context, sha string) error
}

// Blob is stored content being read.
type Blob interface {
	io.ReadSeekCloser
	Size() int64
}

// ErrBlobNotFound is returned by Blobs.Open for content that is not stored.
var ErrBlobNotFound = errors.New("mediaapi: blob not found")

// validSHA reports whether s is a lower-case hex SHA-256, the only blob names there are (so no
// name can climb out of the store's directory or bucket prefix).
func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// openBlobs builds the store media.store names.
func openBlobs(cfg config.Media, dir string) (Blobs, error) {
	switch cfg.Store {
	case "filesystem":
		return newFSBlobs(dir)
	case "s3":
		return newS3Blobs(cfg.S3)
	}
	return nil, fmt.Errorf("mediaapi: unknown media store %q", cfg.Store)
}

// fsBlobs keeps blobs in a directory: content/ab/cd/abcd... (two levels of fan-out keep
// directories small). Spooled uploads are renamed into place, so the spool directory must be on
// the same filesystem (it is: <dir>/tmp).
type fsBlobs struct {
	dir string
}

func newFSBlobs(dir string) (*fsBlobs, error) {
	if err := os.MkdirAll(filepath.Join(dir, "content"), 0o700); err != nil {
		return nil, fmt.Errorf("mediaapi: media directory: %w", err)
	}
	return &fsBlobs{dir: dir}, nil
}

func (s *fsBlobs) path(sha string) string {
	return filepath.Join(s.dir, "content", sha[0:2], sha[2:4], sha)
}

func (s *fsBlobs) Put(_ context.Context, sha string, f *os.File, _ int64) error {
	if !validSHA(sha) {
		return fmt.Errorf("mediaapi: bad blob name %q", sha)
	}
	dst := s.path(sha)
	if _, err := os.Stat(dst); err == nil {
		return nil // the same content is stored already
	}
	if err := f.Sync(); err != nil { // the bytes are on disk before the database names them
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	// Rename is atomic: a reader sees no blob or the whole blob. Two uploads of the same content
	// at once both rename identical bytes into place.
	return os.Rename(f.Name(), dst)
}

func (s *fsBlobs) Open(_ context.Context, sha string) (Blob, error) {
	if !validSHA(sha) {
		return nil, ErrBlobNotFound
	}
	f, err := os.Open(s.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrBlobNotFound
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileBlob{File: f, size: st.Size()}, nil
}

func (s *fsBlobs) Delete(_ context.Context, sha string) error {
	if !validSHA(sha) {
		return nil
	}
	err := os.Remove(s.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

type fileBlob struct {
	*os.File
	size int64
}

func (b fileBlob) Size() int64 { return b.size }

// spool is an upload being received: a temporary file hashed while it is written.
type spool struct {
	f    *os.File
	sha  string
	size int64
}

// remove deletes the spool file (if Put did not move it away).
func (s *spool) remove() {
	if s == nil || s.f == nil {
		return
	}
	s.f.Close()
	_ = os.Remove(s.f.Name()) // gone already when Put renamed it
}
