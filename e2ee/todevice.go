package e2ee

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// To-device messages (module "Send-to-Device messaging"): PUT /sendToDevice stores one message per
// recipient device in the device's inbox, all in one transaction with the sender's transaction ID,
// then wakes the recipients' syncs.
//
//	Send ── tx: txn ID (retry? done) → devices → queue limits → position → inbox rows ──► Wake(recipients)
//	sync of device D with since position S, current position P:
//	  Ack(D, S)            delete D's messages ≤ S: D got them in the response that handed out S
//	  Pending(D, S, P, n)  D's messages in (S, P], at most n; the next token carries the last position
//
// A message is deleted only once its device synced with a token issued after the response that
// carried it, so a response lost on the way costs a repeat, never a message.

// Defaults of ToDeviceOptions.
const (
	// DefaultMaxPendingToDevice is how many messages may wait for one device.
	DefaultMaxPendingToDevice = 10000
	// DefaultToDeviceSyncLimit is how many messages one sync response carries (the spec recommends 100).
	DefaultToDeviceSyncLimit = 100
	// toDeviceRetryAfter is what a sender is told to wait when a recipient's queue is full.
	toDeviceRetryAfter = 30 * time.Second
)

// ToDeviceWaker wakes the syncs of users who have something new (the sync notifier). It is a
// subset of Waker, so one notifier serves both services.
type ToDeviceWaker interface{ Wake(userIDs ...string) }

// RemoteToDevice hands to-device messages for users of other servers to federation (the
// m.direct_to_device EDU), after the request committed. messages holds the remote users of one
// request, whatever their servers; messageID is unique per request.
type RemoteToDevice interface {
	SendToDevice(ctx context.Context, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error
}

// ToDeviceOptions configure the to-device service.
type ToDeviceOptions struct {
	ServerName string
	// MaxPending is how many messages may wait for one device (DefaultMaxPendingToDevice if 0). A
	// request that would put one more into a full inbox is refused as a whole (M_LIMIT_EXCEEDED),
	// except that a full dehydrated device (MSC3814), which by design does not sync, just misses
	// the message.
	MaxPending int
	// Remote sends messages to users of other servers; nil drops them (logged).
	Remote RemoteToDevice
}

// ToDevice is the to-device message service.
type ToDevice struct {
	store *storage.Store
	waker ToDeviceWaker
	opts  ToDeviceOptions
	log   *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// NewToDevice builds the service. waker may be nil (nobody is woken).
func NewToDevice(store *storage.Store, waker ToDeviceWaker, opts ToDeviceOptions, log *slog.Logger) *ToDevice {
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPendingToDevice
	}
	return &ToDevice{store: store, waker: waker, opts: opts, log: log, Now: time.Now}
}

// ErrQueueFull is the error of a request refused because a recipient device has MaxPending
// messages waiting: M_LIMIT_EXCEEDED (429) with retry_after_ms, so that clients retry later,
// when the device may have synced. Nothing of the request is stored.
var ErrQueueFull = spec.LimitExceeded(toDeviceRetryAfter.Milliseconds()).
	With("A recipient device has too many undelivered to-device messages; try again later")

// Send delivers messages (user ID → device ID or "*" for every device of the user → content) of
// one event type from a local user's device. It is idempotent per sending device on (eventType,
// txnID): a retry returns nil and delivers nothing again. Unknown local users and devices are
// skipped, as are users of other servers while no RemoteToDevice is set. Contents must be JSON
// objects (valid JSON, as the request decoders guarantee).
func (t *ToDevice) Send(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error {
	from, err := spec.ParseUserID(sender)
	if err != nil || from.ServerName() != t.opts.ServerName {
		return fmt.Errorf("e2ee: to-device sender %q is not a local user", sender)
	}
	if eventType == "" || len(eventType) > 255 {
		return spec.ErrInvalidParam.With("Invalid event type")
	}
	if txnID == "" {
		return spec.ErrInvalidParam.With("Invalid transaction ID")
	}
	local := make(map[string]map[string]json.RawMessage, len(messages)) // localpart → device → content
	remote := map[string]map[string]json.RawMessage{}
	for userID, devices := range messages {
		u, err := spec.ParseUserID(userID)
		if err != nil {
			return spec.ErrInvalidParam.Withf("Invalid user ID %q", clipID(userID, 64))
		}
		for device, content := range devices {
			if device == "" {
				return spec.ErrInvalidParam.With("Empty device ID")
			}
			if c := bytes.TrimSpace(content); len(c) == 0 || c[0] != '{' {
				return spec.ErrBadJSON.Withf("The message for %s %s must be an object", clipID(userID, 64), clipID(device, 64))
			}
		}
		if u.ServerName() == t.opts.ServerName {
			local[u.Localpart()] = devices
		} else if len(devices) > 0 {
			remote[userID] = devices
		}
	}

	var recipients []string // user IDs to wake
	fresh := false
	err = t.store.Write(ctx, func(c storage.Conn) error {
		recipients = recipients[:0]
		var err error
		if fresh, err = c.InsertToDeviceTxn(ctx, from.Localpart(), senderDevice, eventType, txnID, t.Now().UnixMilli()); err != nil || !fresh {
			return err
		}
		recipients, err = t.deliver(ctx, c, sender, eventType, local)
		return err
	})
	if err != nil || !fresh {
		return err
	}
	if len(recipients) > 0 && t.waker != nil {
		t.waker.Wake(recipients...)
	}
	t.sendRemote(ctx, sender, eventType, remote)
	return nil
}

// deliver puts the messages of local (localpart → device ID or "*" → content) from sender into the
// inboxes of the devices they reach, all at one new to-device position, and returns the user IDs
// to wake. A full inbox fails it with ErrQueueFull, before anything is written.
func (t *ToDevice) deliver(ctx context.Context, c storage.Conn, sender, eventType string, local map[string]map[string]json.RawMessage) ([]string, error) {
	msgs, err := t.expand(ctx, c, local)
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	if msgs, err = t.checkQueues(ctx, c, msgs); err != nil || len(msgs) == 0 {
		return nil, err
	}
	pos, err := c.NextPosition(ctx, storage.StreamToDevice)
	if err != nil {
		return nil, err
	}
	var recipients []string
	for i := range msgs {
		msgs[i].StreamPos, msgs[i].Sender, msgs[i].Type = pos, sender, eventType
		if i == 0 || msgs[i].Localpart != msgs[i-1].Localpart {
			recipients = append(recipients, spec.NewUserID(msgs[i].Localpart, t.opts.ServerName).String())
		}
	}
	return recipients, c.InsertToDevice(ctx, msgs)
}

// expand turns the local part of a request into one message per existing device: "*" reaches
// every device of the user, and a message for a named device replaces the "*" one for it. The
// result is sorted by user and device (a fixed lock order for concurrent senders).
func (t *ToDevice) expand(ctx context.Context, c storage.Conn, local map[string]map[string]json.RawMessage) ([]storage.ToDeviceMessage, error) {
	if len(local) == 0 {
		return nil, nil
	}
	users := make([]string, 0, len(local))
	for lp := range local {
		users = append(users, lp)
	}
	slices.Sort(users)
	existing, err := c.DevicesOf(ctx, users)
	if err != nil {
		return nil, err
	}
	var msgs []storage.ToDeviceMessage
	for _, lp := range users {
		devices := local[lp]
		all, star := devices["*"]
		ids := existing[lp]
		slices.Sort(ids)
		for _, id := range ids {
			content, ok := devices[id]
			if !ok {
				if !star {
					continue
				}
				content = all
			}
			msgs = append(msgs, storage.ToDeviceMessage{Localpart: lp, DeviceID: id, Content: string(content)})
		}
	}
	return msgs, nil
}

// checkQueues drops from msgs the messages for devices that already have MaxPending messages
// waiting, so that one flooded or long-absent device cannot block a room-key share addressed to
// many. When that leaves nothing to deliver to a device that syncs (a dehydrated device never
// does: its messages are dropped quietly), the request is refused with ErrQueueFull, so the
// sender learns that its messages were not delivered.
func (t *ToDevice) checkQueues(ctx context.Context, c storage.Conn, msgs []storage.ToDeviceMessage) ([]storage.ToDeviceMessage, error) {
	var users []string
	for i, m := range msgs {
		if i == 0 || m.Localpart != msgs[i-1].Localpart {
			users = append(users, m.Localpart)
		}
	}
	full, err := c.FullToDeviceQueues(ctx, users, t.opts.MaxPending)
	if err != nil || len(full) == 0 {
		return msgs, err
	}
	kept := msgs[:0:0]
	refused := false
	for _, m := range msgs {
		if !slices.Contains(full[m.Localpart], m.DeviceID) {
			kept = append(kept, m)
			continue
		}
		d, err := c.DehydratedDevice(ctx, m.Localpart)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if err != nil || d.DeviceID != m.DeviceID {
			refused = true
			t.log.WarnContext(ctx, "to-device message dropped: the recipient device's queue is full", "user", m.Localpart,
				"device_id", m.DeviceID, "max_pending", t.opts.MaxPending)
			continue
		}
		t.log.InfoContext(ctx, "to-device message for a full dehydrated device dropped", "user", m.Localpart, "device_id", m.DeviceID)
	}
	if len(kept) == 0 && refused {
		return nil, ErrQueueFull
	}
	return kept, nil
}

// sendRemote hands the messages for other servers to federation after commit.
func (t *ToDevice) sendRemote(ctx context.Context, sender, eventType string, remote map[string]map[string]json.RawMessage) {
	if len(remote) == 0 {
		return
	}
	if t.opts.Remote == nil {
		t.log.InfoContext(ctx, "to-device messages for remote users dropped: no federation sender", "sender", sender,
			"type", eventType, "users", len(remote))
		return
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	if err := t.opts.Remote.SendToDevice(ctx, sender, eventType, hex.EncodeToString(id[:]), remote); err != nil {
		t.log.WarnContext(ctx, "to-device messages for remote users not sent", "sender", sender, "err", err)
	}
}

// Position is the current position of the to-device stream: every message at or below it has
// committed.
func (t *ToDevice) Position(ctx context.Context) (int64, error) {
	return t.store.Read().Position(ctx, storage.StreamToDevice)
}

// Pending returns the messages waiting for a device with positions in (after, upto], oldest
// first, at most limit of them (DefaultToDeviceSyncLimit if limit <= 0), each as the /sync event
// {"sender","type","content"}. last is the position the next sync token should carry: the
// position of the last message returned when more are waiting, else upto (after, if that is
// higher). Users of other servers have no inbox.
func (t *ToDevice) Pending(ctx context.Context, userID, deviceID string, after, upto int64, limit int) (events []json.RawMessage, last int64, err error) {
	localpart, ok := t.localpart(userID)
	if !ok {
		return nil, max(after, upto), nil
	}
	return t.pending(ctx, localpart, deviceID, after, upto, limit)
}

func (t *ToDevice) pending(ctx context.Context, localpart, deviceID string, after, upto int64, limit int) ([]json.RawMessage, int64, error) {
	if after >= upto {
		return nil, after, nil
	}
	if limit <= 0 {
		limit = DefaultToDeviceSyncLimit
	}
	msgs, err := t.store.Read().ToDeviceMessages(ctx, localpart, deviceID, after, upto, limit)
	if err != nil {
		return nil, after, err
	}
	last := upto
	if len(msgs) == limit {
		last = msgs[len(msgs)-1].StreamPos
	}
	events := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		events[i] = toDeviceEvent(m)
	}
	return events, last, nil
}

// Ack deletes a device's messages at or below upto: the device synced with a token carrying upto,
// so it received them. It writes only when there is something to delete.
func (t *ToDevice) Ack(ctx context.Context, userID, deviceID string, upto int64) error {
	localpart, ok := t.localpart(userID)
	if !ok {
		return nil
	}
	return t.ack(ctx, localpart, deviceID, upto)
}

func (t *ToDevice) ack(ctx context.Context, localpart, deviceID string, upto int64) error {
	if upto <= 0 {
		return nil
	}
	has, err := t.store.Read().HasToDeviceUpTo(ctx, localpart, deviceID, upto)
	if err != nil || !has {
		return err
	}
	return t.store.Write(ctx, func(c storage.Conn) error {
		_, err := c.DeleteToDeviceUpTo(ctx, localpart, deviceID, upto)
		return err
	})
}

func (t *ToDevice) localpart(userID string) (string, bool) {
	u, err := spec.ParseUserID(userID)
	if err != nil || u.ServerName() != t.opts.ServerName {
		return "", false
	}
	return u.Localpart(), true
}

// toDeviceEvent is the /sync form of a stored message, spliced from the stored bytes.
func toDeviceEvent(m storage.ToDeviceMessage) json.RawMessage {
	sender, _ := json.Marshal(m.Sender)
	typ, _ := json.Marshal(m.Type)
	b := make([]byte, 0, len(m.Content)+len(sender)+len(typ)+32)
	b = append(b, `{"sender":`...)
	b = append(b, sender...)
	b = append(b, `,"type":`...)
	b = append(b, typ...)
	b = append(b, `,"content":`...)
	b = append(b, m.Content...)
	return append(b, '}')
}

func clipID(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
