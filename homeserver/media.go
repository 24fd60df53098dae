package homeserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/hearthmx/homeserver/federation"
	"github.com/hearthmx/homeserver/mediaapi"
)

// remoteMedia is the media repository's RemoteFetcher: downloads from other servers over
// federation. It sits here, in the composition root, so that neither handler package imports
// the other.
type remoteMedia struct{ fed *federation.API }

func (r remoteMedia) FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (*mediaapi.RemoteMedia, error) {
	m, err := r.fed.DownloadMedia(ctx, serverName, mediaID, maxBytes)
	if errors.Is(err, federation.ErrMediaNotFound) {
		return nil, fmt.Errorf("%w: %w", mediaapi.ErrRemoteNotFound, err)
	}
	if err != nil {
		return nil, err
	}
	return &mediaapi.RemoteMedia{ContentType: m.ContentType, FileName: m.FileName, Body: m.Body}, nil
}
