package config_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/config"
)

func TestValidateMedia(t *testing.T) {
	for _, tc := range []struct {
		paths  []string
		mutate func(c *config.Config)
	}{
		{[]string{"media.store"}, func(c *config.Config) { c.Media.Store = "tape" }},
		{[]string{"media.s3.bucket", "media.s3.endpoint"}, func(c *config.Config) { c.Media.Store = "s3" }},
		{[]string{"media.max_upload_bytes"}, func(c *config.Config) { c.Media.MaxUploadBytes = 0 }},
		{[]string{"media.user_quota_bytes"}, func(c *config.Config) { c.Media.UserQuotaBytes = -1 }},
		{[]string{"media.max_pending_uploads"}, func(c *config.Config) { c.Media.MaxPendingUploads = 0 }},
		{[]string{"media.pending_upload_lifetime"}, func(c *config.Config) { c.Media.PendingUploadLifetime = config.Duration(1) }},
		{[]string{"media.upload_timeout"}, func(c *config.Config) { c.Media.UploadTimeout = 0 }},
		{[]string{"media.thumbnails.sizes[1]"}, func(c *config.Config) { c.Media.Thumbnails.Sizes = []string{"32x32-crop", "32x32"} }},
		{[]string{"media.thumbnails.sizes[0]"}, func(c *config.Config) { c.Media.Thumbnails.Sizes = []string{"0x32-scale"} }},
		{[]string{"media.thumbnails.max_pixels"}, func(c *config.Config) { c.Media.Thumbnails.MaxPixels = 10 }},
		{[]string{"media.url_preview.allowed_networks[0]"}, func(c *config.Config) { c.Media.URLPreview.AllowedNetworks = []string{"localhost"} }},
		{[]string{"media.url_preview.max_bytes"}, func(c *config.Config) { c.Media.URLPreview.MaxBytes = 1 }},
		{[]string{"media.url_preview.timeout"}, func(c *config.Config) { c.Media.URLPreview.Timeout = 0 }},
	} {
		c := config.Default()
		tc.mutate(c)
		if got := problemPaths(c.Validate()); !slices.Equal(got, tc.paths) {
			t.Errorf("want problems at %v, got %v", tc.paths, c.Validate())
		}
	}
	c := config.Default()
	c.Media.Store = "s3"
	c.Media.S3.Endpoint, c.Media.S3.Bucket = "s3.example.org", "media"
	if ps := c.Validate(); len(ps) != 0 {
		t.Fatalf("s3 config: %v", ps)
	}
}

func TestMediaDefaults(t *testing.T) {
	c := config.Default()
	if got := c.MediaDir(); got != filepath.Join("./data", "media") {
		t.Fatalf("MediaDir = %q", got)
	}
	c.Media.Path = "/srv/media"
	if got := c.MediaDir(); got != "/srv/media" {
		t.Fatalf("MediaDir = %q", got)
	}
	want := []config.ThumbnailSize{{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"}}
	for i, s := range config.Default().Media.Thumbnails.Sizes {
		got, err := config.ParseThumbnailSize(s)
		if err != nil || got != want[i] {
			t.Fatalf("size %q = %+v, %v", s, got, err)
		}
	}
	// Lists from the environment.
	c = config.Default()
	if ps := config.ApplyEnv(c, []string{"HS_MEDIA_THUMBNAILS_SIZES=64x64-crop, 1024x768-scale", "HS_MEDIA_URL_PREVIEW_ALLOWED_NETWORKS=10.1.0.0/16"}); len(ps) != 0 {
		t.Fatal(ps)
	}
	if !slices.Equal(c.Media.Thumbnails.Sizes, []string{"64x64-crop", "1024x768-scale"}) || c.Media.URLPreview.AllowedNetworks[0] != "10.1.0.0/16" {
		t.Fatalf("from the environment: %+v", c.Media)
	}
}
