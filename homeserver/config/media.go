package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Media configures the media repository (mediaapi): where uploads are stored, limits,
// thumbnails and URL previews.
type Media struct {
	// Store is filesystem (Path) or s3 (S3).
	Store string `yaml:"store"`
	// Path is the directory of the filesystem store; empty means <data_dir>/media.
	Path string  `yaml:"path"`
	S3   MediaS3 `yaml:"s3"`
	// MaxUploadBytes is the largest upload accepted (advertised as m.upload.size).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// UserQuotaBytes is the most a user may have uploaded in total; 0 is unlimited.
	UserQuotaBytes int64 `yaml:"user_quota_bytes"`
	// MaxPendingUploads is how many created but not yet uploaded media IDs a user may hold.
	MaxPendingUploads int `yaml:"max_pending_uploads"`
	// PendingUploadLifetime is how long an ID from POST /_matrix/media/v1/create waits for its
	// content (unused_expires_at).
	PendingUploadLifetime Duration `yaml:"pending_upload_lifetime"`
	// UploadTimeout is how long reading one upload's body may take.
	UploadTimeout Duration `yaml:"upload_timeout"`
	// AllowUnauthenticatedLegacy serves media uploaded while it is true through the deprecated,
	// unauthenticated /_matrix/media/v3/download and /thumbnail endpoints too.
	AllowUnauthenticatedLegacy bool            `yaml:"allow_unauthenticated_legacy"`
	Thumbnails                 MediaThumbnails `yaml:"thumbnails"`
	URLPreview                 URLPreview      `yaml:"url_preview"`
}

// MediaS3 is an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW, ...).
type MediaS3 struct {
	// Endpoint is host[:port] of the S3 API.
	Endpoint        string `yaml:"endpoint"`
	Bucket          string `yaml:"bucket"`
	Region          string `yaml:"region"`
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key"`
	// UseTLS talks HTTPS to the endpoint.
	UseTLS bool `yaml:"use_tls"`
	// Prefix is prepended to every object key.
	Prefix string `yaml:"prefix"`
}

// MediaThumbnails configures thumbnailing.
type MediaThumbnails struct {
	// Sizes are made for every uploaded image, as WIDTHxHEIGHT-METHOD (32x32-crop, 800x600-scale);
	// a request is answered with the smallest of them that is at least as large.
	Sizes []string `yaml:"sizes"`
	// MaxPixels is the largest image (width x height) decoded for thumbnailing.
	MaxPixels int64 `yaml:"max_pixels"`
}

// URLPreview configures GET preview_url.
type URLPreview struct {
	Enabled bool `yaml:"enabled"`
	// AllowedNetworks are IPs or CIDRs previews may fetch from even though they are loopback,
	// private, link-local, ... (refused otherwise).
	AllowedNetworks []string `yaml:"allowed_networks"`
	// MaxBytes is the most read of a page or image.
	MaxBytes int64 `yaml:"max_bytes"`
	// Timeout bounds fetching one preview, redirects included.
	Timeout Duration `yaml:"timeout"`
}

func defaultMedia() Media {
	return Media{
		Store:                 "filesystem",
		S3:                    MediaS3{Region: "us-east-1", UseTLS: true},
		MaxUploadBytes:        50 << 20,
		MaxPendingUploads:     10,
		PendingUploadLifetime: Duration(24 * time.Hour),
		UploadTimeout:         Duration(10 * time.Minute),
		Thumbnails: MediaThumbnails{
			Sizes:     []string{"32x32-crop", "96x96-crop", "320x240-scale", "640x480-scale", "800x600-scale"},
			MaxPixels: 32_000_000,
		},
		URLPreview: URLPreview{MaxBytes: 10 << 20, Timeout: Duration(10 * time.Second)},
	}
}

// MediaDir is the directory of the filesystem media store.
func (c *Config) MediaDir() string {
	if c.Media.Path != "" {
		return c.Media.Path
	}
	return filepath.Join(c.DataDir, "media")
}

// ThumbnailSize is one entry of media.thumbnails.sizes.
type ThumbnailSize struct {
	Width, Height int
	Method        string // crop or scale
}

// ParseThumbnailSize reads WIDTHxHEIGHT-METHOD.
func ParseThumbnailSize(s string) (ThumbnailSize, error) {
	dims, method, ok := strings.Cut(s, "-")
	ws, hs, ok2 := strings.Cut(dims, "x")
	if !ok || !ok2 || (method != "crop" && method != "scale") {
		return ThumbnailSize{}, fmt.Errorf("%q is not WIDTHxHEIGHT-crop or WIDTHxHEIGHT-scale", s)
	}
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if err1 != nil || err2 != nil || w < 1 || h < 1 || w > 4096 || h > 4096 {
		return ThumbnailSize{}, fmt.Errorf("%q: width and height must be numbers from 1 to 4096", s)
	}
	return ThumbnailSize{Width: w, Height: h, Method: method}, nil
}

func (c *Config) validateMedia() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: "media." + path, Message: fmt.Sprintf(format, args...)})
	}
	m := c.Media
	switch m.Store {
	case "filesystem":
	case "s3":
		if m.S3.Endpoint == "" {
			add("s3.endpoint", "required when media.store is s3")
		}
		if m.S3.Bucket == "" {
			add("s3.bucket", "required when media.store is s3")
		}
	default:
		add("store", "must be filesystem or s3, got %q", m.Store)
	}
	if m.MaxUploadBytes < 1 {
		add("max_upload_bytes", "must be at least 1")
	}
	if m.UserQuotaBytes < 0 {
		add("user_quota_bytes", "must not be negative (0 is unlimited)")
	}
	if m.MaxPendingUploads < 1 {
		add("max_pending_uploads", "must be at least 1")
	}
	if m.PendingUploadLifetime < Duration(time.Minute) {
		add("pending_upload_lifetime", "must be at least 1m")
	}
	if m.UploadTimeout < Duration(time.Second) {
		add("upload_timeout", "must be at least 1s")
	}
	for i, s := range m.Thumbnails.Sizes {
		if _, err := ParseThumbnailSize(s); err != nil {
			add(fmt.Sprintf("thumbnails.sizes[%d]", i), "%v", err)
		}
	}
	if m.Thumbnails.MaxPixels < 1_000_000 {
		add("thumbnails.max_pixels", "must be at least 1000000")
	}
	for i, n := range m.URLPreview.AllowedNetworks {
		if !validIPOrCIDR(n) {
			add(fmt.Sprintf("url_preview.allowed_networks[%d]", i), "must be an IP address or CIDR, got %q", n)
		}
	}
	if m.URLPreview.MaxBytes < 1024 {
		add("url_preview.max_bytes", "must be at least 1024")
	}
	if m.URLPreview.Timeout < Duration(time.Second) {
		add("url_preview.timeout", "must be at least 1s")
	}
	return ps
}
