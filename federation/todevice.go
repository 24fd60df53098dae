package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hearthmx/homeserver/e2ee"
)

// To-device messages over federation (server-server API, "Send-to-device messaging"): the
// m.direct_to_device EDU, durable in both directions. Out: the e2ee to-device service hands the
// remote part of a /sendToDevice request to SendToDevice, which queues one EDU per destination
// server (federation_edu_outbox). In: the messages go into our devices' inboxes, once per
// (origin, message_id), in one transaction (e2ee.ToDevice.ReceiveRemote).

// directToDevice is the content of m.direct_to_device.
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// queueTimeout bounds the queueing of a request's remote messages, which goes on when the client
// that sent them has gone (its messages are committed locally already).
const queueTimeout = 30 * time.Second

// RemoteToDevice is how the to-device service sends messages to other servers' users (nil
// without an outbound queue).
func (a *API) RemoteToDevice() e2ee.RemoteToDevice {
	if a.sender == nil {
		return nil
	}
	return remoteToDevice{a}
}

type remoteToDevice struct{ a *API }

// SendToDevice queues one m.direct_to_device EDU per server of the users in messages.
func (t remoteToDevice) SendToDevice(ctx context.Context, sender, eventType, messageID string,
	messages map[string]map[string]json.RawMessage) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queueTimeout)
	defer cancel()
	byServer := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range messages {
		server := serverName(user)
		if server == "" || server == t.a.serverName {
			continue
		}
		if byServer[server] == nil {
			byServer[server] = map[string]map[string]json.RawMessage{}
		}
		byServer[server][user] = devices
	}
	var failed []string
	for _, server := range slices.Sorted(maps.Keys(byServer)) {
		edu := directToDevice{Sender: sender, Type: eventType, MessageID: messageID, Messages: byServer[server]}
		if err := t.a.sender.QueueEDU(ctx, []string{server}, "m.direct_to_device", edu); err != nil {
			failed = append(failed, server)
			t.a.log.Warn("federation: to-device messages not queued", "destination", server, "err", err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("federation: to-device messages for %v not queued", failed)
	}
	return nil
}

// receiveDirectToDevice handles m.direct_to_device: the sender must be a user of the origin.
func (a *API) receiveDirectToDevice(ctx context.Context, origin string, content json.RawMessage) error {
	if a.e2e == nil || a.e2e.toDevice == nil {
		return nil
	}
	var m directToDevice
	if err := json.Unmarshal(content, &m); err != nil {
		return fmt.Errorf("malformed m.direct_to_device: %w", err)
	}
	if err := userOfOrigin(m.Sender, origin); err != nil {
		return err
	}
	_, err := a.e2e.toDevice.ReceiveRemote(ctx, origin, m.Sender, m.Type, m.MessageID, m.Messages)
	return err
}
