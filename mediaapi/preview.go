package mediaapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/hearthmx/homeserver/homeserver/netguard"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// URL previews: the server fetches a page a user posted and answers its OpenGraph data, with
// og:image replaced by an mxc:// URI of the image, fetched and stored as media. Every connection
// (the page, each redirect, the image) is dialled through netguard, which refuses loopback,
// private, link-local, multicast, unspecified and CGNAT addresses not in
// media.url_preview.allowed_networks, on the address actually connected to. A preview is kept
// for previewTTL and shared by everyone who asks.

const (
	previewTTL       = time.Hour
	maxRedirects     = 5
	maxOGProperties  = 64
	maxOGValueLength = 2000
)

// newPreviewClient is the HTTP client of previews: guarded dialing, no proxy, bounded time and
// redirects.
func newPreviewClient(g *netguard.Guard, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport: g.Transport(timeout),
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
			}
			return nil
		},
	}
}

// previewURL is GET /_matrix/client/v1/media/preview_url (and the deprecated
// /_matrix/media/v3/preview_url).
func (a *API) previewURL(r *http.Request) (any, error) {
	if a.preview == nil {
		return nil, spec.ErrUnrecognized.With("URL previews are disabled on this server")
	}
	raw := r.URL.Query().Get("url")
	if raw == "" {
		return nil, spec.ErrMissingParam.With("url is required")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > 2048 {
		return nil, spec.ErrInvalidParam.With("url must be an absolute http or https URL")
	}
	u.Fragment = ""
	key := u.String()
	if body, ts, err := a.store.Read().URLPreview(r.Context(), key); err == nil && time.Since(time.UnixMilli(ts)) < previewTTL {
		return json.RawMessage(body), nil
	}
	v, err, _ := a.flight.Do("preview "+key, func() (any, error) { return a.buildPreview(u) })
	if err != nil {
		return nil, err
	}
	return v, nil
}

// buildPreview fetches u and stores its preview.
func (a *API) buildPreview(u *url.URL) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.URLPreview.Timeout.D())
	defer cancel()
	data, ctype, final, err := a.fetchForPreview(ctx, u.String())
	if err != nil {
		return nil, err
	}
	og := map[string]any{}
	switch {
	case ctype == "text/html" || ctype == "application/xhtml+xml":
		og = parseOpenGraph(data, ctype)
		if img, ok := og["og:image"].(string); ok {
			delete(og, "og:image")
			if iu, err := final.Parse(img); err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
				if idata, _, _, err := a.fetchForPreview(ctx, iu.String()); err == nil {
					a.addPreviewImage(ctx, og, idata)
				}
			}
		}
	case strings.HasPrefix(ctype, "image/"):
		a.addPreviewImage(ctx, og, data)
	}
	body, err := json.Marshal(og)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	if err := a.store.Write(ctx, func(c storage.Conn) error { return c.PutURLPreview(ctx, u.String(), string(body), now) }); err != nil {
		return nil, err
	}
	return body, nil
}

// fetchForPreview GETs rawURL and returns at most url_preview.max_bytes of its body (a longer
// page is cut there, which keeps its head; a longer image is refused), its media type and the
// URL it ended at after redirects.
func (a *API) fetchForPreview(ctx context.Context, rawURL string) ([]byte, string, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", nil, spec.ErrInvalidParam.With("Invalid URL")
	}
	req.Header.Set("User-Agent", "hearth URL preview (Matrix homeserver)")
	req.Header.Set("Accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	resp, err := a.preview.Do(req)
	if err != nil {
		if errors.Is(err, netguard.ErrForbidden) {
			return nil, "", nil, spec.ErrForbidden.With("URL previews of this address are not allowed")
		}
		return nil, "", nil, spec.ErrUnknown.WithStatus(http.StatusBadGateway).With("Could not fetch the URL")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", nil, spec.ErrUnknown.WithStatus(http.StatusBadGateway).Withf("The URL answered %d", resp.StatusCode)
	}
	limit := a.cfg.URLPreview.MaxBytes
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", nil, spec.ErrUnknown.WithStatus(http.StatusBadGateway).With("Could not read the URL")
	}
	ctype := mediaType(resp.Header.Get("Content-Type"))
	if int64(len(data)) > limit {
		if strings.HasPrefix(ctype, "image/") {
			return nil, "", nil, spec.ErrTooLarge.WithStatus(http.StatusBadGateway).With("The content is too large to preview")
		}
		data = data[:limit]
	}
	return data, ctype, resp.Request.URL, nil
}

// addPreviewImage stores an image of a preview as media and describes it in og: og:image (the
// mxc URI), og:image:type, og:image:width, og:image:height and matrix:image:size. Content that
// is not an image this server knows is left out.
func (a *API) addPreviewImage(ctx context.Context, og map[string]any, data []byte) {
	info, err := probeImage(bytes.NewReader(data))
	if err != nil {
		return
	}
	sp, err := a.spoolFrom(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return
	}
	defer sp.remove()
	m := storage.Media{ServerName: a.serverName, MediaID: newMediaID(), SHA256: sp.sha, Size: sp.size,
		ContentType: "image/" + info.format, CreatedTS: time.Now().UnixMilli(), Restricted: !a.cfg.AllowUnauthenticatedLegacy}
	if err := a.commit(ctx, sp, func(c storage.Conn) error { return c.InsertMedia(ctx, m) }); err != nil {
		a.log.Warn("media: storing a preview image", "err", err)
		return
	}
	og["og:image"] = mxc(m.ServerName, m.MediaID)
	og["og:image:type"] = m.ContentType
	og["og:image:width"] = info.width
	og["og:image:height"] = info.height
	og["matrix:image:size"] = m.Size
}

// parseOpenGraph reads the og:* meta properties of an HTML page (in the charset it declares),
// with <title> and <meta name="description"> standing in for a missing og:title and
// og:description.
func parseOpenGraph(page []byte, ctype string) map[string]any {
	og := map[string]any{}
	r, err := charset.NewReader(bytes.NewReader(page), ctype)
	if err != nil {
		r = bytes.NewReader(page)
	}
	z := html.NewTokenizer(r)
	var title, description strings.Builder
	inTitle, titleDone := false, false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := og["og:title"]; !ok && title.Len() > 0 {
				og["og:title"] = clip(strings.Join(strings.Fields(title.String()), " "))
			}
			if _, ok := og["og:description"]; !ok && description.Len() > 0 {
				og["og:description"] = clip(description.String())
			}
			return og
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = !titleDone
			case "meta":
				var prop, metaName, content string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch strings.ToLower(string(k)) {
					case "property":
						prop = strings.ToLower(strings.TrimSpace(string(v)))
					case "name":
						metaName = strings.ToLower(strings.TrimSpace(string(v)))
					case "content":
						content = strings.TrimSpace(string(v))
					}
				}
				if prop == "" && strings.HasPrefix(metaName, "og:") { // a common mistake, read anyway
					prop = metaName
				}
				if strings.HasPrefix(prop, "og:") && content != "" && len(og) < maxOGProperties {
					if _, seen := og[prop]; !seen {
						og[prop] = clip(content)
					}
				}
				if metaName == "description" && description.Len() == 0 {
					description.WriteString(content)
				}
			}
		case html.TextToken:
			if inTitle && title.Len() < maxOGValueLength {
				title.Write(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" && inTitle {
				inTitle, titleDone = false, true
			}
		}
	}
}

// clip cuts a value to maxOGValueLength bytes on a character boundary.
func clip(s string) string {
	if len(s) <= maxOGValueLength {
		return s
	}
	s = s[:maxOGValueLength]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
