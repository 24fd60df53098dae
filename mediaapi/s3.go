package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/hearthmx/homeserver/homeserver/config"
)

// s3Blobs keeps blobs as objects <prefix><sha256> in an S3-compatible bucket, for several nodes
// sharing one media store. It uses four calls: PUT object (a single PUT up to s3PartSize, a
// multipart upload above it), HEAD object, GET object (with Range, for seeking) and DELETE
// object.
type s3Blobs struct {
	client *minio.Client
	bucket string
	prefix string
}

// s3PartSize is the largest object sent in one PUT; larger ones go as a multipart upload.
const s3PartSize = 64 << 20

func newS3Blobs(c config.MediaS3) (*s3Blobs, error) {
	client, err := minio.New(c.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, ""),
		Secure: c.UseTLS,
		Region: c.Region, // known, so the client does not ask the bucket for its location
	})
	if err != nil {
		return nil, fmt.Errorf("mediaapi: s3 client: %w", err)
	}
	return &s3Blobs{client: client, bucket: c.Bucket, prefix: c.Prefix}, nil
}

func (s *s3Blobs) key(sha string) string { return s.prefix + sha }

func (s *s3Blobs) Put(ctx context.Context, sha string, f *os.File, size int64) error {
	if !validSHA(sha) {
		return fmt.Errorf("mediaapi: bad blob name %q", sha)
	}
	if _, err := s.client.StatObject(ctx, s.bucket, s.key(sha), minio.StatObjectOptions{}); err == nil {
		return nil // the same content is stored already
	} else if !notFound(err) {
		return fmt.Errorf("mediaapi: s3 stat: %w", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.key(sha), f, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream", // served with the type of each upload, not this
		PartSize:    s3PartSize,
		// The payload is signed as UNSIGNED-PAYLOAD instead of hashing it once more (TLS protects
		// it in transit; the SHA-256 of the content is its name).
		DisableContentSha256: true,
	})
	if err != nil {
		return fmt.Errorf("mediaapi: s3 put: %w", err)
	}
	return nil
}

func (s *s3Blobs) Open(ctx context.Context, sha string) (Blob, error) {
	if !validSHA(sha) {
		return nil, ErrBlobNotFound
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.key(sha), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("mediaapi: s3 get: %w", err)
	}
	info, err := obj.Stat() // sends the GET; its body is read from as the blob is
	if err != nil {
		obj.Close()
		if notFound(err) {
			return nil, ErrBlobNotFound
		}
		return nil, fmt.Errorf("mediaapi: s3 get: %w", err)
	}
	return s3Blob{Object: obj, size: info.Size}, nil
}

func (s *s3Blobs) Delete(ctx context.Context, sha string) error {
	if !validSHA(sha) {
		return nil
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(sha), minio.RemoveObjectOptions{})
	if err != nil && !notFound(err) {
		return fmt.Errorf("mediaapi: s3 delete: %w", err)
	}
	return nil
}

func notFound(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && (resp.StatusCode == http.StatusNotFound || resp.Code == "NoSuchKey")
}

type s3Blob struct {
	*minio.Object
	size int64
}

func (b s3Blob) Size() int64 { return b.size }
