package storage

import "context"

// Account is a local user.
type Account struct {
	Localpart    string
	PasswordHash string
	Admin        bool
	Guest        bool
	Deactivated  bool
	CreatedTS    int64
}

// CreateAccount inserts a new account; ErrConflict if the localpart is taken (even by a deactivated
// account: user IDs are never reused).
func (c Conn) CreateAccount(ctx context.Context, a Account) error {
	_, err := c.exec(ctx, `INSERT INTO accounts (localpart, password_hash, is_admin, is_guest, deactivated, created_ts)
		VALUES ($1, $2, $3, $4, FALSE, $5)`, a.Localpart, a.PasswordHash, a.Admin, a.Guest, a.CreatedTS)
	return err
}

// Account reads one account.
func (c Conn) Account(ctx context.Context, localpart string) (Account, error) {
	a := Account{Localpart: localpart}
	err := c.scanOne(ctx, `SELECT password_hash, is_admin, is_guest, deactivated, created_ts FROM accounts WHERE localpart = $1`,
		[]any{localpart}, &a.PasswordHash, &a.Admin, &a.Guest, &a.Deactivated, &a.CreatedTS)
	return a, err
}

// AccountExists reports whether the localpart is taken.
func (c Conn) AccountExists(ctx context.Context, localpart string) (bool, error) {
	var n int
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM accounts WHERE localpart = $1`, []any{localpart}, &n)
	return n > 0, err
}

// SetPasswordHash replaces the password hash.
func (c Conn) SetPasswordHash(ctx context.Context, localpart, hash string) error {
	return c.execOne(ctx, `UPDATE accounts SET password_hash = $2 WHERE localpart = $1`, localpart, hash)
}

// SetAdmin grants or revokes server admin.
func (c Conn) SetAdmin(ctx context.Context, localpart string, admin bool) error {
	return c.execOne(ctx, `UPDATE accounts SET is_admin = $2 WHERE localpart = $1`, localpart, admin)
}

// DeactivateAccount marks the account deactivated and clears its password. Devices, tokens and
// profile are removed by the caller in the same transaction.
func (c Conn) DeactivateAccount(ctx context.Context, localpart string) error {
	return c.execOne(ctx, `UPDATE accounts SET deactivated = TRUE, password_hash = '' WHERE localpart = $1`, localpart)
}

// CountAccounts counts non-deactivated accounts (for metrics and admin).
func (c Conn) CountAccounts(ctx context.Context) (int64, error) {
	var n int64
	err := c.scanOne(ctx, `SELECT COUNT(*) FROM accounts WHERE NOT deactivated`, nil, &n)
	return n, err
}
