package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The tool decodes every response of every receiver: with encoding/json that was most of its CPU
// (it validates the whole input, then walks it again by reflection), taken from the server it
// shares the machine with. decodeSync and decodeWS read only what syncResponse and wsIn hold, in
// one pass, skipping the rest without decoding it; they still refuse input that is not JSON.
// TestDecodeMatchesEncodingJSON holds them to what encoding/json reads.

// decodeSync fills s from a sync response.
func decodeSync(data []byte, s *syncResponse) error {
	d := jsonScanner{b: data}
	if err := d.syncResponse(s); err != nil {
		return err
	}
	return d.end()
}

// decodeWS fills m from a message of the sync WebSocket.
func decodeWS(data []byte, m *wsIn) error {
	d := jsonScanner{b: data}
	err := d.object(func(key []byte) error {
		var err error
		switch keyOf(key, "type", "id", "next_batch", "errcode", "error", "body") {
		case "type":
			m.Type, err = d.str()
		case "id":
			m.ID, err = d.str()
		case "next_batch":
			m.NextBatch, err = d.str()
		case "errcode":
			m.Errcode, err = d.str()
		case "error":
			m.Error, err = d.str()
		case "body":
			err = d.syncResponse(&m.Body)
		default:
			err = d.skip()
		}
		return err
	})
	if err != nil {
		return err
	}
	return d.end()
}

func (d *jsonScanner) syncResponse(s *syncResponse) error {
	return d.object(func(key []byte) error {
		switch keyOf(key, "next_batch", "rooms") {
		case "next_batch":
			var err error
			s.NextBatch, err = d.str()
			return err
		case "rooms":
			return d.object(func(key []byte) error {
				if keyOf(key, "join") == "" {
					return d.skip()
				}
				if d.peek() == 'n' { // null: no map, as for encoding/json
					s.Rooms.Join = nil
					return d.literal("null")
				}
				if s.Rooms.Join == nil {
					s.Rooms.Join = map[string]syncRoom{}
				}
				return d.object(func(roomID []byte) error {
					id := string(roomID)
					var r syncRoom // a repeated room ID replaces the first, as for encoding/json
					if err := d.room(&r); err != nil {
						return err
					}
					s.Rooms.Join[id] = r
					return nil
				})
			})
		default:
			return d.skip()
		}
	})
}

func (d *jsonScanner) room(r *syncRoom) error {
	return d.object(func(key []byte) error {
		if keyOf(key, "timeline") == "" {
			return d.skip()
		}
		return d.object(func(key []byte) error {
			switch keyOf(key, "limited", "events") {
			case "limited":
				var err error
				r.Timeline.Limited, err = d.boolean()
				return err
			case "events":
				if d.peek() == 'n' { // null: no slice, as for encoding/json
					r.Timeline.Events = nil
					return d.literal("null")
				}
				r.Timeline.Events = make([]syncEvent, 0, 4)
				return d.array(func() error {
					var ev syncEvent
					if err := d.event(&ev); err != nil {
						return err
					}
					r.Timeline.Events = append(r.Timeline.Events, ev)
					return nil
				})
			default:
				return d.skip()
			}
		})
	})
}

func (d *jsonScanner) event(ev *syncEvent) error {
	return d.object(func(key []byte) error {
		var err error
		switch keyOf(key, "type", "sender", "content") {
		case "type":
			ev.Type, err = d.str()
		case "sender":
			ev.Sender, err = d.str()
		case "content":
			err = d.object(func(key []byte) error {
				if keyOf(key, "body") == "" {
					return d.skip()
				}
				var err error
				ev.Content.Body, err = d.str()
				return err
			})
		default:
			err = d.skip()
		}
		return err
	})
}

// keyOf is the name that key stands for, "" if none: encoding/json matches member names without
// regard to case (the server writes them exactly, so the exact test nearly always decides).
func keyOf(key []byte, names ...string) string {
	for _, n := range names {
		if string(key) == n {
			return n
		}
	}
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return n
		}
	}
	return ""
}

// jsonScanner reads JSON from b, from position i.
type jsonScanner struct {
	b []byte
	i int
}

var errNotJSON = errors.New("not JSON")

func (d *jsonScanner) errorf(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errNotJSON, what, d.i)
}

func (d *jsonScanner) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space (0 at the end).
func (d *jsonScanner) peek() byte {
	d.space()
	if d.i >= len(d.b) {
		return 0
	}
	return d.b[d.i]
}

func (d *jsonScanner) end() error {
	if d.peek() != 0 {
		return d.errorf("data after the value")
	}
	return nil
}

// object reads an object, calling member with each key (valid until the next read) to read its
// value. null is an empty object, as for encoding/json.
func (d *jsonScanner) object(member func(key []byte) error) error {
	switch d.peek() {
	case 'n':
		return d.literal("null")
	case '{':
	default:
		return d.errorf("not an object")
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		key, err := d.rawStr()
		if err != nil {
			return err
		}
		if d.peek() != ':' {
			return d.errorf("no colon")
		}
		d.i++
		if err := member(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.errorf("no comma or end of object")
		}
	}
}

// array reads an array, calling elem to read each element. null is an empty array.
func (d *jsonScanner) array(elem func() error) error {
	switch d.peek() {
	case 'n':
		return d.literal("null")
	case '[':
	default:
		return d.errorf("not an array")
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.errorf("no comma or end of array")
		}
	}
}

// rawStr reads a string: its bytes as they are when it is ASCII without escapes (a slice of the
// input), else decoded by encoding/json.
func (d *jsonScanner) rawStr() ([]byte, error) {
	if d.peek() != '"' {
		return nil, d.errorf("not a string")
	}
	start := d.i
	escaped := false
	for d.i++; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '\\':
			escaped = true
			d.i++
		case c == '"':
			d.i++
			if !escaped {
				return d.b[start+1 : d.i-1], nil
			}
			var s string
			if err := json.Unmarshal(d.b[start:d.i], &s); err != nil {
				return nil, d.errorf("bad string")
			}
			return []byte(s), nil
		case c < 0x20:
			return nil, d.errorf("control character in a string")
		case c >= 0x80: // not ASCII: encoding/json's decoding replaces invalid UTF-8
			escaped = true
		}
	}
	return nil, d.errorf("unterminated string")
}

// str reads a string (null is "").
func (d *jsonScanner) str() (string, error) {
	if d.peek() == 'n' {
		return "", d.literal("null")
	}
	b, err := d.rawStr()
	return string(b), err
}

func (d *jsonScanner) boolean() (bool, error) {
	switch d.peek() {
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	case 'n':
		return false, d.literal("null")
	}
	return false, d.errorf("not a boolean")
}

func (d *jsonScanner) literal(lit string) error {
	if len(d.b)-d.i < len(lit) || string(d.b[d.i:d.i+len(lit)]) != lit {
		return d.errorf("bad literal")
	}
	d.i += len(lit)
	return nil
}

// skip reads any value without keeping it.
func (d *jsonScanner) skip() error {
	switch c := d.peek(); {
	case c == '{':
		return d.object(func([]byte) error { return d.skip() })
	case c == '[':
		return d.array(d.skip)
	case c == '"':
		_, err := d.rawStr()
		return err
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return d.errorf("not a value")
}

// number reads a number: -?digits(.digits)?([eE][+-]?digits)?
func (d *jsonScanner) number() error {
	digits := func() bool {
		start := d.i
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
		return d.i > start
	}
	if d.b[d.i] == '-' {
		d.i++
	}
	if !digits() {
		return d.errorf("bad number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if !digits() {
			return d.errorf("bad number")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if !digits() {
			return d.errorf("bad number")
		}
	}
	return nil
}
