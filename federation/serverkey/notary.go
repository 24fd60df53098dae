package serverkey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Query asks a notary for one server's keys.
type Query struct {
	ServerName string
	// KeyIDs are the keys wanted; empty means all.
	KeyIDs []string
	// MinValidUntilTS: the keys should be valid until at least then (milliseconds).
	MinValidUntilTS int64
}

// MaxNotaryServers is the most servers one notary query may ask about.
const MaxNotaryServers = 100

// notaryParallel is how many servers a notary query fetches from at once.
const notaryParallel = 8

// ErrTooManyServers is returned for a notary query about more than MaxNotaryServers servers.
var ErrTooManyServers = errors.New("too many servers in one key query")

// NotaryAnswer answers POST /_matrix/key/v2/query and GET /_matrix/key/v2/query/{serverName}: for
// each server, its stored key responses, each signed by this server too. When none stored is
// valid until MinValidUntilTS or they are past half their lifetime, the server is asked directly
// first (never through other notaries); if it does not answer, what is stored is served anyway, so
// that old events stay verifiable. A server that is down with nothing stored is left out.
func (r *Ring) NotaryAnswer(ctx context.Context, queries []Query) ([]json.RawMessage, error) {
	if len(queries) > MaxNotaryServers {
		return nil, ErrTooManyServers
	}
	answers := make([][]json.RawMessage, len(queries))
	errs := make([]error, len(queries))
	sem := make(chan struct{}, notaryParallel)
	var wg sync.WaitGroup
	for i, q := range queries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			answers[i], errs[i] = r.notaryAnswerOne(ctx, q)
		}()
	}
	wg.Wait()
	out := []json.RawMessage{}
	seen := map[string]bool{}
	for i := range queries {
		if errs[i] != nil {
			return nil, errs[i]
		}
		for _, a := range answers[i] {
			if !seen[string(a)] {
				seen[string(a)] = true
				out = append(out, a)
			}
		}
	}
	return out, nil
}

func (r *Ring) notaryAnswerOne(ctx context.Context, q Query) ([]json.RawMessage, error) {
	if q.ServerName == r.own.serverName {
		own, err := r.own.Response()
		if err != nil {
			return nil, err
		}
		return []json.RawMessage{own}, nil
	}
	now := r.now().UnixMilli()
	if q.MinValidUntilTS == 0 {
		q.MinValidUntilTS = now
	}
	rows, err := r.store.Read().ServerKeys(ctx, q.ServerName)
	if err != nil {
		return nil, fmt.Errorf("server keys of %s: %w", q.ServerName, err)
	}
	if !fresh(rows, q, now) {
		if err := r.fetchDirectThrottled(ctx, q.ServerName); err != nil {
			r.log.Debug("federation: notary fetch", "server", q.ServerName, "err", err)
		} else if rows, err = r.store.Read().ServerKeys(ctx, q.ServerName); err != nil {
			return nil, fmt.Errorf("server keys of %s: %w", q.ServerName, err)
		}
	}
	var out []json.RawMessage
	seen := map[string]bool{}
	for _, k := range rows {
		if seen[string(k.KeyJSON)] {
			continue
		}
		seen[string(k.KeyJSON)] = true
		signed, err := r.own.Sign(k.KeyJSON)
		if err != nil {
			return nil, err
		}
		out = append(out, signed)
	}
	return out, nil
}

// fresh reports whether the stored rows answer q without asking the server: every wanted key
// (every current one when q names none) is in a response valid until q.MinValidUntilTS and not
// past half its lifetime.
func fresh(rows []storage.ServerKey, q Query, now int64) bool {
	wanted := q.KeyIDs
	if len(wanted) == 0 {
		for _, k := range rows {
			if k.ExpiredTS == 0 {
				wanted = append(wanted, k.KeyID)
			}
		}
	}
	if len(wanted) == 0 {
		return false
	}
	for _, id := range wanted {
		ok := false
		for _, k := range rows {
			halfLife := k.FetchedTS + (k.ValidUntilTS-k.FetchedTS)/2
			ok = ok || k.KeyID == id && k.ValidUntilTS >= q.MinValidUntilTS && now < halfLife
		}
		if !ok {
			return false
		}
	}
	return true
}

// fetchDirectThrottled asks server for its keys unless that was done less than RefetchInterval
// ago; concurrent calls share one request.
func (r *Ring) fetchDirectThrottled(ctx context.Context, server string) error {
	r.mu.Lock()
	e := r.entry(server)
	if !e.lastFetch.IsZero() && r.now().Sub(e.lastFetch) < r.refetch {
		r.mu.Unlock()
		return errors.New("fetched recently")
	}
	r.mu.Unlock()
	ch := r.flight.DoChan("direct "+server, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		r.mu.Lock()
		r.entry(server).lastFetch = r.now()
		r.mu.Unlock()
		return nil, r.fetchDirect(ctx, server)
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case res := <-ch:
		return res.Err
	}
}
