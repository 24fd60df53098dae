package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The outbound queue (server-server API, "Transactions"): every event this server sends to
// another server goes through the federation_outbox table.
//
//	room writer ── BEGIN; insert event; insert one outbox row per destination; COMMIT
//	      │ after commit: hs.federation.outbox ["hs2", ...]
//	      ▼
//	Sender: one goroutine per destination with queued rows
//	   loop: read up to 50 rows in stream order ── PUT /send/{txnId} ──▶ destination
//	         2xx: delete those rows, go on at once (catch-up after downtime drains in batches)
//	         failure: wait retry_initial, doubling up to retry_max; a request from the
//	                  destination (it is back) ends the wait at once
//	         4xx (but 401, 408, 429): refused for good; its events are dropped for it
//
// Why a table and not a JetStream stream: the rows are written in the transaction that stores
// the event, so an event is never committed without being queued nor queued without being
// committed; publishing to a stream after commit would lose the events of a crash between the
// two. The rows survive restarts (the queue resumes from the table at start) and all nodes
// share them. The bus only carries wake-ups.
//
// A transaction's ID is "<first>-<last>" stream position of its events: a retry of the same
// events reuses the ID, so a destination that processed it already answers from its record.
// Events of this server are signed when they leave (they are stored unsigned, see
// room.Service.SignPDU). Backoff state lives in memory: after a restart every destination is
// tried at once. With several nodes each would send the same rows (harmless: destinations
// drop repeated events, but wasteful); a per-destination lease is future work.

// Limits of one transaction (spec).
const (
	maxPDUsPerTxn = 50
	maxEDUsPerTxn = 100
)

// SenderOptions configure a Sender.
type SenderOptions struct {
	ServerName   string
	Store        *storage.Store
	Rooms        *room.Service
	Client       *fedclient.Client
	Bus          *bus.Bus
	RetryInitial time.Duration
	RetryMax     time.Duration
	Log          *slog.Logger
}

// Sender sends the queued events to each destination.
type Sender struct {
	o   SenderOptions
	ctx context.Context
	end context.CancelFunc
	sub *nats.Subscription
	wg  sync.WaitGroup

	mu    sync.Mutex
	dests map[string]*destQueue
}

// destQueue is one destination's goroutine and its wake-ups.
type destQueue struct {
	name string
	kick chan struct{} // new rows were queued
	back chan struct{} // the destination contacted us: retry now
	// failing is set while the destination is in backoff (read under Sender.mu).
	failing bool
}

// idleExit is how long a destination's goroutine waits for new rows before it ends.
const idleExit = 5 * time.Minute

// NewSender starts the queue: it subscribes to the outbox wake-ups and starts a goroutine for
// every destination that has rows left from before.
func NewSender(o SenderOptions) (*Sender, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = 10 * time.Second
	}
	if o.RetryMax < o.RetryInitial {
		o.RetryMax = o.RetryInitial
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{o: o, ctx: ctx, end: cancel, dests: map[string]*destQueue{}}
	if o.Bus != nil {
		sub, err := o.Bus.Subscribe(bus.SubjectFederationOutbox, func(data []byte) {
			var dests []string
			if json.Unmarshal(data, &dests) == nil {
				s.Kick(dests...)
			}
		})
		if err != nil {
			cancel()
			return nil, err
		}
		s.sub = sub
	}
	s.wg.Add(2)
	go s.purgeInboundTxns()
	go func() {
		defer s.wg.Done()
		dests, err := o.Store.Read().OutboxDestinations(ctx)
		if err != nil {
			if ctx.Err() == nil {
				o.Log.Error("federation sender: read queued destinations", "err", err)
			}
			return
		}
		s.Kick(dests...)
	}()
	return s, nil
}

// Close stops every destination's goroutine (queued rows stay for the next start).
func (s *Sender) Close() {
	if s.sub != nil {
		_ = s.sub.Unsubscribe()
	}
	s.end()
	s.wg.Wait()
}

// inboundTxnLifetime is how long the responses to other servers' transactions are kept for
// their retries.
const inboundTxnLifetime = 24 * time.Hour

// purgeInboundTxns forgets old inbound transactions every hour. (It lives here because the
// Sender is the federation's one background worker.)
func (s *Sender) purgeInboundTxns() {
	defer s.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			before := time.Now().Add(-inboundTxnLifetime).UnixMilli()
			if err := s.o.Store.Write(s.ctx, func(c storage.Conn) error { return c.PurgeInboundTxns(s.ctx, before) }); err != nil && s.ctx.Err() == nil {
				s.o.Log.Warn("federation: purge inbound transactions", "err", err)
			}
		}
	}
}

// Kick tells the destinations' goroutines that rows were queued, starting them if needed.
func (s *Sender) Kick(dests ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	for _, d := range dests {
		if d == s.o.ServerName {
			continue
		}
		q := s.dests[d]
		if q == nil {
			q = &destQueue{name: d, kick: make(chan struct{}, 1), back: make(chan struct{}, 1)}
			s.dests[d] = q
			s.wg.Add(1)
			go s.run(q)
		}
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
}

// Alive tells the queue that a server contacted us: if it is in backoff, it is retried now.
func (s *Sender) Alive(server string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.dests[server]; q != nil && q.failing {
		select {
		case q.back <- struct{}{}:
		default:
		}
	}
}

// Pending is the number of events queued for a destination (tests, metrics).
func (s *Sender) Pending(ctx context.Context, destination string) (int, error) {
	return s.o.Store.Read().OutboxLen(ctx, destination)
}

// run is a destination's goroutine.
func (s *Sender) run(q *destQueue) {
	defer s.wg.Done()
	log := s.o.Log.With("destination", q.name)
	var backoff time.Duration
	idle := time.NewTimer(idleExit)
	defer idle.Stop()
	for {
		rows, err := s.o.Store.Read().OutboxPDUs(s.ctx, q.name, maxPDUsPerTxn)
		if err == nil && len(rows) == 0 {
			idle.Reset(idleExit)
			select {
			case <-s.ctx.Done():
				return
			case <-q.kick:
				continue
			case <-q.back:
				continue
			case <-idle.C:
				s.mu.Lock()
				if len(q.kick) == 0 {
					delete(s.dests, q.name)
					s.mu.Unlock()
					return
				}
				s.mu.Unlock()
				continue
			}
		}
		if err == nil {
			err = s.send(q.name, rows)
			if refused(err) {
				// The same transaction would get the same answer: give its events up rather than
				// hold everything queued behind them.
				log.Warn("federation: destination refused a transaction, its events are dropped for it",
					"events", len(rows), "queued_from", firstPos(rows), "err", err)
				err = nil
			}
		}
		if err == nil {
			err = s.o.Store.Write(s.ctx, func(c storage.Conn) error {
				return c.DeleteOutbox(s.ctx, q.name, rows[len(rows)-1].StreamPos)
			})
		}
		if s.ctx.Err() != nil {
			return
		}
		if err == nil {
			if backoff != 0 {
				log.Info("federation: destination reachable again")
			}
			backoff = 0
			s.setFailing(q, false)
			continue
		}
		backoff = min(max(2*backoff, s.o.RetryInitial), s.o.RetryMax)
		log.Warn("federation: transaction failed, will retry", "retry_in", backoff, "queued_from", firstPos(rows), "err", err)
		s.setFailing(q, true)
		wait := time.NewTimer(backoff)
		select {
		case <-s.ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		case <-q.back:
			wait.Stop()
			backoff = 0
		}
	}
}

// refused reports a definite refusal of a transaction (a 4xx other than 401, which a key fetch
// failing on the other side can cause, 408 and 429, which ask to come back later).
func refused(err error) bool {
	var fe *fedclient.Error
	if !errors.As(err, &fe) {
		return false
	}
	switch fe.Status {
	case http.StatusUnauthorized, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return fe.Status >= 400 && fe.Status < 500
}

func firstPos(rows []storage.OutboxPDU) int64 {
	if len(rows) == 0 {
		return 0
	}
	return rows[0].StreamPos
}

func (s *Sender) setFailing(q *destQueue, failing bool) {
	s.mu.Lock()
	q.failing = failing
	s.mu.Unlock()
}

// transaction is the body of PUT /send/{txnId}.
type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus,omitempty"`
}

// send sends one transaction of queued events.
func (s *Sender) send(dest string, rows []storage.OutboxPDU) error {
	txn := transaction{Origin: s.o.ServerName, OriginServerTS: time.Now().UnixMilli(), PDUs: make([]json.RawMessage, 0, len(rows))}
	for _, r := range rows {
		raw, err := s.signed(r)
		if err != nil {
			// A stored event that does not parse cannot be sent, now or later: skip it.
			s.o.Log.Error("federation: queued event cannot be sent", "event_id", r.EventID, "err", err)
			continue
		}
		txn.PDUs = append(txn.PDUs, raw)
	}
	txnID := fmt.Sprintf("%d-%d", rows[0].StreamPos, rows[len(rows)-1].StreamPos)
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := s.o.Client.DoJSON(s.ctx, dest, "PUT", "/_matrix/federation/v1/send/"+url.PathEscape(txnID), txn, &resp); err != nil {
		return err
	}
	for id, r := range resp.PDUs {
		if r.Error != "" {
			s.o.Log.Info("federation: destination refused an event", "destination", dest, "event_id", id, "error", r.Error)
		}
	}
	return nil
}

// signed is a queued event's federation JSON, signed by this server if it is one of ours.
func (s *Sender) signed(r storage.OutboxPDU) (json.RawMessage, error) {
	v, err := event.LookupVersion(r.RoomVersion)
	if err != nil {
		return nil, err
	}
	p, err := event.Parse(v, r.PDU)
	if err != nil {
		return nil, err
	}
	if serverName(p.Sender) != s.o.ServerName {
		return p.Raw, nil
	}
	return s.o.Rooms.SignPDU(p)
}

// serverName is the server part of a user ID.
func serverName(userID string) string {
	for i := 0; i < len(userID); i++ {
		if userID[i] == ':' {
			return userID[i+1:]
		}
	}
	return ""
}
