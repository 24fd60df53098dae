package storage

import (
	"context"
	"database/sql"
)

// Federation tables (0011_federation.sql): the outbound queue per destination and the record of
// inbound transactions.

// OutboxRow queues one event for one destination server.
type OutboxRow struct {
	Destination string
	StreamPos   int64
	EventID     string
}

// InsertOutbox queues events for destinations, with one statement per maxRowsPerInsert rows. A row
// already queued is left alone.
func (c Conn) InsertOutbox(ctx context.Context, rows []OutboxRow) error {
	return insertRows(ctx, c, `INSERT INTO federation_outbox (destination, stream_pos, event_id) VALUES `, ` ON CONFLICT DO NOTHING`,
		3, rows, func(args []any, r OutboxRow) []any { return append(args, r.Destination, r.StreamPos, r.EventID) })
}

// OutboxPDU is a queued event with what sending it needs.
type OutboxPDU struct {
	StreamPos   int64
	EventID     string
	RoomVersion string
	PDU         []byte
}

// OutboxPDUs returns the first limit events queued for a destination, in stream order.
func (c Conn) OutboxPDUs(ctx context.Context, destination string, limit int) ([]OutboxPDU, error) {
	return collect(ctx, c, `SELECT o.stream_pos, o.event_id, r.version, e.pdu FROM federation_outbox o
		JOIN events e ON e.event_id = o.event_id JOIN rooms r ON r.room_id = e.room_id
		WHERE o.destination = $1 ORDER BY o.stream_pos LIMIT $2`, []any{destination, limit},
		func(r *sql.Rows) (OutboxPDU, error) {
			var p OutboxPDU
			var pdu string
			err := r.Scan(&p.StreamPos, &p.EventID, &p.RoomVersion, &pdu)
			p.PDU = []byte(pdu)
			return p, err
		})
}

// DeleteOutbox removes a destination's queued events up to stream position upTo.
func (c Conn) DeleteOutbox(ctx context.Context, destination string, upTo int64) error {
	_, err := c.exec(ctx, `DELETE FROM federation_outbox WHERE destination = $1 AND stream_pos <= $2`, destination, upTo)
	return err
}

// OutboxDestinations lists the destinations with queued events or EDUs.
func (c Conn) OutboxDestinations(ctx context.Context) ([]string, error) {
	return collect(ctx, c, `SELECT destination FROM federation_outbox UNION SELECT destination FROM federation_edu_outbox
		ORDER BY destination`, nil, scanString)
}

// StreamFederationEDU numbers queued EDUs (OutboxEDU.ID).
const StreamFederationEDU = "federation_edu"

// OutboxEDU is an EDU queued for a destination (0012_federation_edus.sql).
type OutboxEDU struct {
	Destination string
	ID          int64
	Type        string
	Content     []byte
	QueuedTS    int64
}

// InsertOutboxEDUs queues EDUs, with one statement per maxRowsPerInsert rows.
func (c Conn) InsertOutboxEDUs(ctx context.Context, rows []OutboxEDU) error {
	return insertRows(ctx, c, `INSERT INTO federation_edu_outbox (destination, id, edu_type, content, queued_ts) VALUES `,
		` ON CONFLICT DO NOTHING`, 5, rows, func(args []any, r OutboxEDU) []any {
			return append(args, r.Destination, r.ID, r.Type, string(r.Content), r.QueuedTS)
		})
}

// OutboxEDUs returns the first limit EDUs queued for a destination, in the order they were queued.
func (c Conn) OutboxEDUs(ctx context.Context, destination string, limit int) ([]OutboxEDU, error) {
	return collect(ctx, c, `SELECT destination, id, edu_type, content, queued_ts FROM federation_edu_outbox
		WHERE destination = $1 ORDER BY id LIMIT $2`, []any{destination, limit},
		func(r *sql.Rows) (OutboxEDU, error) {
			var e OutboxEDU
			var content string
			err := r.Scan(&e.Destination, &e.ID, &e.Type, &content, &e.QueuedTS)
			e.Content = []byte(content)
			return e, err
		})
}

// DeleteOutboxEDUs removes a destination's queued EDUs up to ID upTo.
func (c Conn) DeleteOutboxEDUs(ctx context.Context, destination string, upTo int64) error {
	_, err := c.exec(ctx, `DELETE FROM federation_edu_outbox WHERE destination = $1 AND id <= $2`, destination, upTo)
	return err
}

// OutboxEDULen counts the EDUs queued for a destination.
func (c Conn) OutboxEDULen(ctx context.Context, destination string) (int, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM federation_edu_outbox WHERE destination = $1`, []any{destination}, &n)
	return n, err
}

// OutboxLen counts the events queued for a destination.
func (c Conn) OutboxLen(ctx context.Context, destination string) (int, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM federation_outbox WHERE destination = $1`, []any{destination}, &n)
	return n, err
}

// InboundTxn returns the response recorded for a transaction an origin sent before.
func (c Conn) InboundTxn(ctx context.Context, origin, txnID string) ([]byte, error) {
	var resp string
	err := c.scanOne(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`,
		[]any{origin, txnID}, &resp)
	return []byte(resp), err
}

// InsertInboundTxn records a processed transaction and its response (a repeat keeps the first).
func (c Conn) InsertInboundTxn(ctx context.Context, origin, txnID string, response []byte, ts int64) error {
	_, err := c.exec(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), ts)
	return err
}

// PurgeInboundTxns forgets transactions received before ts.
func (c Conn) PurgeInboundTxns(ctx context.Context, before int64) error {
	_, err := c.exec(ctx, `DELETE FROM federation_inbound_txns WHERE received_ts < $1`, before)
	return err
}

// EventMeta is what the PDU pipeline needs to know about an event it may hold.
type EventMeta struct {
	EventID    string
	Outlier    bool
	Rejected   bool
	StateGroup int64
	Depth      int64
}

// EventMetas reads the metadata of those of ids that are stored, by event ID.
func (c Conn) EventMetas(ctx context.Context, ids []string) (map[string]EventMeta, error) {
	out := make(map[string]EventMeta, len(ids))
	for start := 0; start < len(ids); start += maxRowsPerInsert {
		chunk := ids[start:min(start+maxRowsPerInsert, len(ids))]
		ms, err := collect(ctx, c, `SELECT event_id, outlier, rejected, state_group, depth FROM events WHERE event_id IN (`+
			placeholders(1, len(chunk))+`)`, stringArgs(chunk), func(r *sql.Rows) (EventMeta, error) {
			var m EventMeta
			return m, r.Scan(&m.EventID, &m.Outlier, &m.Rejected, &m.StateGroup, &m.Depth)
		})
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			out[m.EventID] = m
		}
	}
	return out, nil
}

// HasSuccessor reports whether a stored event names eventID among its prev_events.
func (c Conn) HasSuccessor(ctx context.Context, eventID string) (bool, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM event_edges WHERE prev_event_id = $1`, []any{eventID}, &n)
	return n > 0, err
}

// UpgradeOutlier turns a stored outlier into a timeline event (it arrived again as part of the
// room's DAG): its stream position, state group and flags are set from e, and its edges stored.
func (c Conn) UpgradeOutlier(ctx context.Context, e Event) error {
	var streamPos any
	if e.StreamPos != 0 {
		streamPos = e.StreamPos
	}
	if err := c.execOne(ctx, `UPDATE events SET outlier = FALSE, stream_pos = $2, state_group = $3, rejected = $4, soft_failed = $5
		WHERE event_id = $1 AND outlier`, e.EventID, streamPos, e.StateGroup, e.Rejected, e.SoftFailed); err != nil {
		return err
	}
	return c.insertEdges(ctx, []Event{e})
}

// ClearCurrentState removes every current state row of a room (before the state of a room joined
// over federation replaces what an invite had shown of it).
func (c Conn) ClearCurrentState(ctx context.Context, roomID string) error {
	_, err := c.exec(ctx, `DELETE FROM current_state WHERE room_id = $1`, roomID)
	return err
}

// AcquireLease takes or renews node's lease of a destination's queue until expires, unless
// another node holds one that has not expired at now. It reports whether node holds the lease.
func (c Conn) AcquireLease(ctx context.Context, destination, node string, now, expires int64) (bool, error) {
	var holder string
	err := c.scanOne(ctx, `INSERT INTO federation_leases (destination, node, expires_ts) VALUES ($1, $2, $3)
		ON CONFLICT (destination) DO UPDATE SET node = excluded.node, expires_ts = excluded.expires_ts
		WHERE federation_leases.node = excluded.node OR federation_leases.expires_ts < $4
		RETURNING node`, []any{destination, node, expires, now}, &holder)
	if err == ErrNotFound {
		return false, nil
	}
	return err == nil, err
}

// ReleaseLease gives up node's lease of a destination's queue.
func (c Conn) ReleaseLease(ctx context.Context, destination, node string) error {
	_, err := c.exec(ctx, `DELETE FROM federation_leases WHERE destination = $1 AND node = $2`, destination, node)
	return err
}
