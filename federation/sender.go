package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
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
//	   loop: read up to 50 events in stream order and up to 100 EDUs (edu.go)
//	         ── PUT /send/{txnId} ──▶ destination
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
// A transaction's ID names what it carries: "<first>-<last>" stream position of its events, then
// ".<first>-<last>" IDs of its durable EDUs, then ".<start>-<n>" when it carries ephemeral EDUs
// (this process's start time and a counter, so that such IDs never repeat). A retry of the same
// rows thus reuses the ID, and a destination that processed it already answers from its record.
// Events of this server are signed when they leave (they are stored unsigned, see
// room.Service.SignPDU). Backoff state lives in memory: after a restart every destination is
// tried at once.
//
// Several nodes on one database: a destination's queued rows are sent by the node holding its
// lease (federation_leases, leaseTTL, renewed while it sends); the others send only the ephemeral
// EDUs they hold in memory, and take the lease over when it expires (its holder stopped).

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
	// start and txns make the IDs of transactions with ephemeral EDUs unique.
	start int64
	txns  atomic.Int64
	// node names this process in federation_leases.
	node string
}

// Leases of destinations' queues: a node holds one for leaseTTL and renews it when half is
// left; a node that failed to take one tries again leaseRetry later at the earliest.
const (
	leaseTTL   = 30 * time.Second
	leaseRetry = 2 * time.Second
)

// destQueue is one destination's goroutine and its wake-ups.
type destQueue struct {
	name string
	kick chan struct{} // new rows were queued
	back chan struct{} // the destination contacted us: retry now
	// failing is set while the destination is in backoff (read under Sender.mu).
	failing bool
	// eph holds the ephemeral EDUs waiting for the destination (under Sender.mu; edu.go).
	eph []pendingEDU
	// leaseUntil is when this node's lease of the destination ends (zero: not held); tried is
	// when taking it last failed (only the destination's goroutine uses them).
	leaseUntil, tried time.Time
}

// poke wakes the destination's goroutine without blocking.
func (q *destQueue) poke() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
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
	node := make([]byte, 8)
	_, _ = rand.Read(node)
	s := &Sender{o: o, ctx: ctx, end: cancel, dests: map[string]*destQueue{}, start: time.Now().UnixMilli(), node: hex.EncodeToString(node)}
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
		s.queueLocked(d).poke()
	}
}

// queueLocked returns a destination's queue, starting its goroutine if needed (under s.mu).
func (s *Sender) queueLocked(d string) *destQueue {
	q := s.dests[d]
	if q == nil {
		q = &destQueue{name: d, kick: make(chan struct{}, 1), back: make(chan struct{}, 1)}
		s.dests[d] = q
		s.wg.Add(1)
		go s.run(q)
	}
	return q
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

// Pending is the number of events queued for a destination (tests, metrics); EDUs are not counted.
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
	defer s.releaseLease(q)
	for {
		held, leaseErr := s.holdLease(q)
		b, err := s.next(q, held)
		if err == nil && b.empty() {
			wait := idleExit
			switch {
			case leaseErr != nil:
				wait = leaseRetry // the database did not answer: try again soon
			case !held:
				wait = leaseTTL / 2 // another node sends the queued rows: take over if it stops
			}
			idle.Reset(wait)
			select {
			case <-s.ctx.Done():
				return
			case <-q.kick:
				continue
			case <-q.back:
				continue
			case <-idle.C:
				if !held && s.queued(q.name) {
					continue
				}
				s.mu.Lock()
				if len(q.kick) == 0 && len(q.eph) == 0 {
					delete(s.dests, q.name)
					s.mu.Unlock()
					return
				}
				s.mu.Unlock()
				continue
			}
		}
		if err == nil {
			err = s.send(q.name, b)
			if refused(err) {
				// The same transaction would get the same answer: give its events up rather than
				// hold everything queued behind them.
				log.Warn("federation: destination refused a transaction, its events and EDUs are dropped for it",
					"events", len(b.pdus), "edus", len(b.edus)+len(b.eph), "queued_from", firstPos(b.pdus), "err", err)
				err = nil
			}
		}
		if err == nil {
			err = s.o.Store.Write(s.ctx, func(c storage.Conn) error {
				if len(b.pdus) > 0 {
					if err := c.DeleteOutbox(s.ctx, q.name, b.pdus[len(b.pdus)-1].StreamPos); err != nil {
						return err
					}
				}
				if len(b.edus) > 0 {
					return c.DeleteOutboxEDUs(s.ctx, q.name, b.edus[len(b.edus)-1].ID)
				}
				return nil
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
		var from int64
		if b != nil {
			s.putBackEphemeral(q, b.eph)
			from = firstPos(b.pdus)
		}
		backoff = min(max(2*backoff, s.o.RetryInitial), s.o.RetryMax)
		log.Warn("federation: transaction failed, will retry", "retry_in", backoff, "queued_from", from, "err", err)
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

// holdLease takes or renews this node's lease of the destination's queue when less than half of
// it is left, and reports whether this node holds it (false with an error when the database
// could not tell).
func (s *Sender) holdLease(q *destQueue) (bool, error) {
	now := time.Now()
	if q.leaseUntil.Sub(now) > leaseTTL/2 {
		return true, nil
	}
	if q.leaseUntil.IsZero() && now.Sub(q.tried) < leaseRetry {
		return false, nil
	}
	var held bool
	err := s.o.Store.Write(s.ctx, func(c storage.Conn) (err error) {
		held, err = c.AcquireLease(s.ctx, q.name, s.node, now.UnixMilli(), now.Add(leaseTTL).UnixMilli())
		return err
	})
	switch {
	case err != nil:
		if s.ctx.Err() == nil {
			s.o.Log.Warn("federation: lease of a destination's queue", "destination", q.name, "err", err)
		}
		q.leaseUntil = time.Time{}
		return false, err
	case held:
		q.leaseUntil = now.Add(leaseTTL)
	default:
		q.leaseUntil, q.tried = time.Time{}, now
	}
	return held, nil
}

// releaseLease gives the destination's lease up when the goroutine ends, so that another node
// need not wait for it to expire.
func (s *Sender) releaseLease(q *destQueue) {
	if q.leaseUntil.IsZero() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.o.Store.Write(ctx, func(c storage.Conn) error { return c.ReleaseLease(ctx, q.name, s.node) })
	q.leaseUntil = time.Time{}
}

// queued reports whether rows are queued for a destination.
func (s *Sender) queued(dest string) bool {
	n, err := s.o.Store.Read().OutboxLen(s.ctx, dest)
	if err == nil && n == 0 {
		n, err = s.o.Store.Read().OutboxEDULen(s.ctx, dest)
	}
	return err != nil || n > 0
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

// batch is what one transaction carries.
type batch struct {
	pdus []storage.OutboxPDU
	edus []storage.OutboxEDU
	eph  []pendingEDU
	// id is the transaction ID (see the top of this file).
	id string
}

func (b *batch) empty() bool { return len(b.pdus) == 0 && len(b.edus) == 0 && len(b.eph) == 0 }

// next reads a destination's next transaction: queued events, then durable EDUs (only when this
// node holds the destination's lease), then ephemeral ones, within the spec's limits.
func (s *Sender) next(q *destQueue, durable bool) (*batch, error) {
	b := &batch{}
	if durable {
		var err error
		if b.pdus, err = s.o.Store.Read().OutboxPDUs(s.ctx, q.name, maxPDUsPerTxn); err != nil {
			return nil, err
		}
		if b.edus, err = s.o.Store.Read().OutboxEDUs(s.ctx, q.name, maxEDUsPerTxn); err != nil {
			return nil, err
		}
	}
	pdus, edus := b.pdus, b.edus
	b.eph = s.takeEphemeral(q, maxEDUsPerTxn-len(edus))
	var id strings.Builder
	if len(pdus) > 0 {
		fmt.Fprintf(&id, "%d-%d", pdus[0].StreamPos, pdus[len(pdus)-1].StreamPos)
	}
	if len(edus) > 0 {
		fmt.Fprintf(&id, ".%d-%d", edus[0].ID, edus[len(edus)-1].ID)
	}
	if len(b.eph) > 0 {
		fmt.Fprintf(&id, ".%d-%d", s.start, s.txns.Add(1))
	}
	b.id = id.String()
	return b, nil
}

// send sends one transaction.
func (s *Sender) send(dest string, b *batch) error {
	rows := b.pdus
	txn := transaction{Origin: s.o.ServerName, OriginServerTS: time.Now().UnixMilli(), PDUs: make([]json.RawMessage, 0, len(rows))}
	for _, e := range b.edus {
		txn.EDUs = append(txn.EDUs, eduRaw(e.Type, e.Content))
	}
	for _, e := range b.eph {
		txn.EDUs = append(txn.EDUs, eduRaw(e.typ, e.content))
	}
	for _, r := range rows {
		raw, err := s.signed(r)
		if err != nil {
			// A stored event that does not parse cannot be sent, now or later: skip it.
			s.o.Log.Error("federation: queued event cannot be sent", "event_id", r.EventID, "err", err)
			continue
		}
		txn.PDUs = append(txn.PDUs, raw)
	}
	txnID := b.id
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

// eduRaw is an EDU's transaction JSON.
func eduRaw(typ string, content json.RawMessage) json.RawMessage {
	raw, _ := json.Marshal(eduJSON{Type: typ, Content: content})
	return raw
}
