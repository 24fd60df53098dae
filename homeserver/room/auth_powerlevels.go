package room

import (
	"sort"

	"github.com/hearthmx/homeserver/homeserver/event"
)

// checkPowerLevels is rule 9 (v12: 10), for an m.room.power_levels event whose sender has
// senderLevel under the current levels pl.
func (c *Checker) checkPowerLevels(ev *event.PDU, state StateLookup, pl *PowerLevels, senderLevel int64, ci *creatorInfo) error {
	n := c.n
	next, probs := parsePowerLevels(c.v, ev.Content)
	if probs != nil {
		if c.v.IntegerPowerLevels() {
			switch {
			case probs.top != nil:
				return reject(n.plInts, "%v", probs.top)
			case probs.maps != nil:
				return reject(n.plMaps, "%v", probs.maps)
			}
		}
		if probs.users != nil {
			return reject(n.plUsers, "%v", probs.users)
		}
		// Before v10 the rules only check users; a value that is neither an integer nor a string
		// holding one cannot be compared by the later rules, so the event is rejected under the
		// power levels rule as a whole (gomatrixserverlib does the same; Synapse fails on it).
		return reject(n.powerLevels, "%v", probs.first())
	}
	if c.v.PrivilegedCreators() {
		for user := range next.users {
			if _, ok := ci.creators[user]; ok {
				return reject(n.plCreators, "users lists room creator %s", user)
			}
		}
	}
	prevEv := state(TypePowerLevels, "")
	if prevEv == nil {
		return nil
	}
	prev := c.plContentOf(prevEv)
	if prev == nil {
		prev = &plContent{}
	}

	for i, key := range topLevelKeys {
		if prev.set[i] == next.set[i] && (!next.set[i] || prev.top[i] == next.top[i]) {
			continue
		}
		if prev.set[i] && prev.top[i] > senderLevel {
			return reject(n.plTop+".1", "changing %s from %d needs power level %d, sender has %s", key, prev.top[i], prev.top[i], levelString(senderLevel))
		}
		if next.set[i] && next.top[i] > senderLevel {
			return reject(n.plTop+".2", "setting %s to %d is above the sender's power level %s", key, next.top[i], levelString(senderLevel))
		}
	}

	for _, m := range [2]struct {
		name       string
		prev, next map[string]int64
	}{{"events", prev.events, next.events}, {"notifications", prev.notifications, next.notifications}} {
		for _, k := range sortedKeys(m.prev) {
			old := m.prev[k]
			if nv, ok := m.next[k]; ok && nv == old {
				continue
			}
			if old > senderLevel {
				return reject(n.plEventsOld+".1", "changing %s[%s] from %d is above the sender's power level %s", m.name, k, old, levelString(senderLevel))
			}
		}
		for _, k := range sortedKeys(m.next) {
			nv := m.next[k]
			if old, ok := m.prev[k]; ok && old == nv {
				continue
			}
			if nv > senderLevel {
				return reject(n.plEventsNew+".1", "setting %s[%s] to %d is above the sender's power level %s", m.name, k, nv, levelString(senderLevel))
			}
		}
	}

	for _, user := range sortedKeys(prev.users) {
		if user == ev.Sender {
			continue
		}
		old := prev.users[user]
		if nv, ok := next.users[user]; ok && nv == old {
			continue
		}
		if old >= senderLevel {
			return reject(n.plUsersOld+".1", "changing the level of %s (%d) needs a power level above it, sender has %s", user, old, levelString(senderLevel))
		}
	}
	for _, user := range sortedKeys(next.users) {
		nv := next.users[user]
		if old, ok := prev.users[user]; ok && old == nv {
			continue
		}
		if nv > senderLevel {
			return reject(n.plUsersNew+".1", "setting the level of %s to %d is above the sender's power level %s", user, nv, levelString(senderLevel))
		}
	}
	return nil
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
