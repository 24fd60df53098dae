package storage

import "context"

// insertRows runs a multi-row INSERT in statements of at most maxRowsPerInsert rows: head is the
// statement up to VALUES, tail what follows the value lists (an ON CONFLICT clause), and row
// appends one row's cols arguments.
func insertRows[T any](ctx context.Context, c Conn, head, tail string, cols int, rows []T, row func(args []any, r T) []any) error {
	for len(rows) > 0 {
		n := min(len(rows), maxRowsPerInsert)
		args := make([]any, 0, cols*n)
		for _, r := range rows[:n] {
			args = row(args, r)
		}
		if _, err := c.exec(ctx, head+rowPlaceholders(n, cols)+tail, args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}
