package storage

import (
	"context"
	"database/sql"
)

// Report is one report of content to the server's admins.
type Report struct {
	ID         int64
	Kind       string // ReportEvent, ReportRoom or ReportUser
	Reporter   string
	RoomID     string
	EventID    string
	UserID     string // the reported user, or the reported event's sender
	Reason     string
	ReceivedTS int64
}

// Kinds of report.
const (
	ReportEvent = "event"
	ReportRoom  = "room"
	ReportUser  = "user"
)

// streamReports numbers the reports.
const streamReports = "reports"

// InsertReport stores a report under a new ID, which it returns.
func (c Conn) InsertReport(ctx context.Context, r Report) (int64, error) {
	id, err := c.NextPosition(ctx, streamReports)
	if err != nil {
		return 0, err
	}
	_, err = c.exec(ctx, `INSERT INTO reports (id, kind, reporter, room_id, event_id, user_id, reason, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, r.Kind, r.Reporter, r.RoomID, r.EventID, r.UserID, r.Reason, r.ReceivedTS)
	return id, err
}

const reportColumns = `id, kind, reporter, room_id, event_id, user_id, reason, received_ts`

func scanReport(r interface{ Scan(...any) error }) (Report, error) {
	var x Report
	err := r.Scan(&x.ID, &x.Kind, &x.Reporter, &x.RoomID, &x.EventID, &x.UserID, &x.Reason, &x.ReceivedTS)
	return x, err
}

// Reports lists up to limit reports of a kind, newest first, skipping the first offset; and how
// many there are of that kind.
func (c Conn) Reports(ctx context.Context, kind string, offset, limit int) ([]Report, int64, error) {
	var total int64
	if err := c.scanOne(ctx, `SELECT COUNT(*) FROM reports WHERE kind = $1`, []any{kind}, &total); err != nil {
		return nil, 0, err
	}
	out, err := collect(ctx, c, `SELECT `+reportColumns+` FROM reports WHERE kind = $1 ORDER BY id DESC LIMIT $2 OFFSET $3`,
		[]any{kind, limit, offset}, func(r *sql.Rows) (Report, error) { return scanReport(r) })
	return out, total, err
}

// Report reads one report.
func (c Conn) Report(ctx context.Context, id int64) (Report, error) {
	x, err := scanReport(c.row(ctx, `SELECT `+reportColumns+` FROM reports WHERE id = $1`, id))
	if err == sql.ErrNoRows {
		return x, ErrNotFound
	}
	return x, err
}

// DeleteReport removes a report; ErrNotFound if there is none with that ID.
func (c Conn) DeleteReport(ctx context.Context, id int64) error {
	res, err := c.exec(ctx, `DELETE FROM reports WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
