package event

import "fmt"

// The redaction algorithm (rooms/v6..v12, "Redactions"): strip every top-level key not needed by
// the protocol, and every content key except the few that auth rules depend on. The result is
// what signatures and the reference hash (hence the event ID) cover.

// Redact returns the redacted form of an event as canonical JSON. unsigned is removed with every
// other unprotected key; callers serving the event to clients add their own unsigned (for example
// redacted_because).
func Redact(v Version, eventJSON []byte) ([]byte, error) {
	canon, err := Canonical(eventJSON)
	if err != nil {
		return nil, err
	}
	return appendRedacted(make([]byte, 0, 256), v, canon, false)
}

// keepTopLevel reports whether redaction keeps a top-level key. key is canonically escaped; all
// protected keys are plain ASCII, so comparing the escaped form is exact.
func keepTopLevel(v Version, key []byte) bool {
	switch string(key) {
	case "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
		"depth", "prev_events", "auth_events", "origin_server_ts":
		return true
	case "prev_state", "membership", "origin":
		return !v.RedactionRulesV11()
	}
	return false
}

// appendRedacted appends the redacted form of the canonical event canon to dst. With
// dropSignatures it also leaves out "signatures", which gives exactly the bytes that event
// signatures cover and the reference hash is computed over.
func appendRedacted(dst []byte, v Version, canon []byte, dropSignatures bool) ([]byte, error) {
	typeRaw, ok := member(canon, "type")
	if !ok {
		if _, err := objectOrErr(canon); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: event has no type", ErrInvalid)
	}
	eventType, ok := unquote(typeRaw)
	if !ok {
		return nil, fmt.Errorf("%w: event type is not a string", ErrInvalid)
	}
	dst = append(dst, '{')
	first, haveContent := true, false
	sep := func() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
	}
	it := members(canon)
	for it.next() {
		if !keepTopLevel(v, it.key) || (dropSignatures && string(it.key) == "signatures") {
			continue
		}
		// The redacted event always has a content object (as Synapse does), even when the
		// original lacked one; "content" sorts after "auth_events" only.
		if !haveContent && string(it.key) > "content" {
			sep()
			dst = append(dst, `"content":{}`...)
			haveContent = true
		}
		sep()
		if string(it.key) == "content" {
			haveContent = true
			dst = append(dst, `"content":`...)
			dst = appendRedactedContent(dst, v, eventType, it.val)
			continue
		}
		dst = append(dst, it.b[it.start:it.i]...)
	}
	if it.err != nil {
		return nil, it.err
	}
	if !haveContent {
		sep()
		dst = append(dst, `"content":{}`...)
	}
	return append(dst, '}'), nil
}

func objectOrErr(canon []byte) ([]byte, error) {
	it := members(canon)
	if it.err != nil {
		return nil, fmt.Errorf("%w: event is not a JSON object", ErrInvalid)
	}
	return canon, nil
}

// contentKeys lists the content keys redaction keeps for an event type; nil means none.
func contentKeys(v Version, eventType string) []string {
	switch eventType {
	case "m.room.member":
		if v.RedactKeepsJoinAuthorisedVia() {
			return []string{"join_authorised_via_users_server", "membership"}
		}
		return []string{"membership"}
	case "m.room.create":
		return []string{"creator"} // before v11; v11+ keeps all of it (handled by the caller)
	case "m.room.join_rules":
		if v.RedactKeepsJoinRulesAllow() {
			return []string{"allow", "join_rule"}
		}
		return []string{"join_rule"}
	case "m.room.power_levels":
		if v.RedactionRulesV11() {
			return []string{"ban", "events", "events_default", "invite", "kick", "redact",
				"state_default", "users", "users_default"}
		}
		return []string{"ban", "events", "events_default", "kick", "redact", "state_default",
			"users", "users_default"}
	case "m.room.history_visibility":
		return []string{"history_visibility"}
	case "m.room.redaction":
		if v.RedactionRulesV11() {
			return []string{"redacts"}
		}
	}
	return nil
}

// appendRedactedContent appends the redacted form of a canonical content value.
func appendRedactedContent(dst []byte, v Version, eventType string, content []byte) []byte {
	if len(content) == 0 || content[0] != '{' {
		return append(dst, "{}"...)
	}
	if eventType == "m.room.create" && v.RedactionRulesV11() {
		return append(dst, content...)
	}
	keep := contentKeys(v, eventType)
	v11Member := eventType == "m.room.member" && v.RedactionRulesV11()
	dst = append(dst, '{')
	first := true
	it := members(content)
	for it.next() {
		key := string(it.key) // no allocation: only compared
		if v11Member && key == "third_party_invite" {
			// v11+: keep only the "signed" key of third_party_invite. Like Synapse, an object
			// without "signed" becomes {} and a non-object is dropped.
			if len(it.val) == 0 || it.val[0] != '{' {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, `"third_party_invite":{`...)
			if signed, ok := member(it.val, "signed"); ok {
				dst = append(dst, `"signed":`...)
				dst = append(dst, signed...)
			}
			dst = append(dst, '}')
			continue
		}
		for _, k := range keep {
			if key == k {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				dst = append(dst, it.b[it.start:it.i]...)
				break
			}
		}
	}
	return append(dst, '}')
}
