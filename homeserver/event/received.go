package event

// WithoutUnsigned returns the event without its "unsigned" member. A received PDU may carry the
// sending server's unsigned data (age, invite_room_state, ...), which is not part of the event:
// it is neither stored nor relayed. The event ID does not change (unsigned is not hashed).
func (p *PDU) WithoutUnsigned() (*PDU, error) {
	if p.Unsigned == nil {
		return p, nil
	}
	canon := []byte(p.Raw)
	if !p.canonical {
		var err error
		if canon, err = Canonical(canon); err != nil {
			return nil, err
		}
	}
	out, err := appendWithout(make([]byte, 0, len(canon)), canon, "unsigned")
	if err != nil {
		return nil, err
	}
	c := *p
	c.Raw, c.Unsigned, c.canonical = out, nil, true
	return &c, nil
}
