package account

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// CreateFilter is POST /user/{userId}/filter: it checks the filter's shape (filter.Parse), stores it
// as sent (compacted, keys the spec does not define kept) and returns its ID. IDs are decimal and
// count up per user, so they never start with "{" (which marks an inline filter).
func (s *Service) CreateFilter(ctx context.Context, localpart string, data []byte) (string, error) {
	if _, err := filter.Parse(data); err != nil {
		return "", err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return "", spec.ErrNotJSON.With("Filter is not valid JSON")
	}
	var id int64
	err := s.store.Write(ctx, func(c storage.Conn) error {
		var err error
		id, err = c.InsertFilter(ctx, localpart, compact.Bytes())
		return err
	})
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(id, 10), nil
}

// Filter is GET /user/{userId}/filter/{filterId}: a filter the user stored, as stored. Unknown IDs,
// and IDs of other users' filters, get M_NOT_FOUND.
func (s *Service) Filter(ctx context.Context, localpart, filterID string) (json.RawMessage, error) {
	notFound := spec.ErrNotFound.With("Unknown filter")
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != filterID {
		return nil, notFound
	}
	k := filterKey{localpart, id}
	s.filtersMu.Lock()
	data, ok := s.filters[k]
	s.filtersMu.Unlock()
	if ok {
		return data, nil
	}
	data, err = s.store.Read().Filter(ctx, localpart, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	s.filtersMu.Lock()
	if s.filters == nil || len(s.filters) >= maxCachedFilters {
		s.filters = map[filterKey]json.RawMessage{}
	}
	s.filters[k] = data
	s.filtersMu.Unlock()
	return data, nil
}

// maxCachedFilters bounds the filter cache; when full it starts over.
const maxCachedFilters = 50_000
