package sync

import (
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/bus"
)

// BusWaker wakes users' syncs on every node: what it is asked goes over the bus (SubjectWake) to
// every node's notifier, this one included. Services whose changes have no stream of their own on
// the bus (to-device messages, key uploads) wake syncing users through it. Without a bus it wakes
// this node only.
type BusWaker struct {
	n *Notifier
	b *bus.Bus
}

// wakeMsg is the data of SubjectWake.
type wakeMsg struct {
	Users   []string `json:"users"`
	Sharing bool     `json:"sharing,omitempty"` // also everyone sharing a room with them
}

// NewBusWaker subscribes n to SubjectWake (b nil: local wake-ups only).
func NewBusWaker(n *Notifier, b *bus.Bus) (*BusWaker, error) {
	w := &BusWaker{n: n, b: b}
	if b == nil {
		return w, nil
	}
	sub, err := b.Subscribe(bus.SubjectWake, func(data []byte) {
		n.notices.Add(1)
		var m wakeMsg
		if err := json.Unmarshal(data, &m); err != nil {
			n.log.Warn("sync notifier: bad wake-up", "data", string(data))
			return
		}
		n.keyCounts.invalidate(m.Users)
		if m.Sharing {
			n.WakeSharing(m.Users...)
		} else {
			n.Wake(m.Users...)
		}
	})
	if err != nil {
		return nil, err
	}
	n.subs = append(n.subs, sub)
	return w, nil
}

// Wake wakes the users' syncs on every node.
func (w *BusWaker) Wake(users ...string) { w.send(wakeMsg{Users: users}) }

// WakeSharing wakes the users' syncs and those of everyone sharing a room with them, on every node.
func (w *BusWaker) WakeSharing(users ...string) { w.send(wakeMsg{Users: users, Sharing: true}) }

func (w *BusWaker) send(m wakeMsg) {
	if len(m.Users) == 0 {
		return
	}
	// This node's cached key counts go before the caller returns (its client may sync at once);
	// other nodes' when the message reaches them.
	w.n.keyCounts.invalidate(m.Users)
	if w.b != nil {
		data, _ := json.Marshal(m)
		if err := w.b.Publish(bus.SubjectWake, data); err == nil {
			return
		} else {
			w.n.log.Warn("publish wake-up; waking this node only", "err", err)
		}
	}
	if m.Sharing {
		w.n.WakeSharing(m.Users...)
	} else {
		w.n.Wake(m.Users...)
	}
}

// ReceiveDeviceChange is the bus callback of SubjectDeviceChange (a device logged in or was
// deleted; every node gets it): the user's room-mates on this node sync their device lists.
func (n *Notifier) ReceiveDeviceChange(data []byte) {
	n.notices.Add(1)
	var m struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(data, &m); err != nil || m.UserID == "" {
		n.log.Warn("sync notifier: bad device change notice", "data", string(data))
		return
	}
	n.keyCounts.invalidate([]string{m.UserID})
	n.WakeSharing(m.UserID)
}
