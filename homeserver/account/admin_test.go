package account

import "testing"

// TestSharedSecretMAC checks the MAC against values computed with Python's hmac module, which is
// what Synapse and its register_new_matrix_user script use:
//
//	hmac.new(secret, b"nonce\x00user\x00password\x00admin|notadmin[\x00user_type]", hashlib.sha1).hexdigest()
func TestSharedSecretMAC(t *testing.T) {
	cases := []struct {
		nonce, user, password string
		admin                 bool
		userType, want        string
	}{
		{"abcdef", "alice", "correct horse", true, "", "86e04ce850cb9f883d10541de8a5ba7114263411"},
		{"abcdef", "bob", "pw", false, "bot", "bda1cf135445f3e850d748d9541f355e4d254ee8"},
	}
	for _, c := range cases {
		if got := SharedSecretMAC("test-shared-secret", c.nonce, c.user, c.password, c.admin, c.userType); got != c.want {
			t.Errorf("SharedSecretMAC(%q, %q, %v, %q) = %s, want %s", c.user, c.password, c.admin, c.userType, got, c.want)
		}
	}
}

func TestRandomToken(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range []int{1, 16, 64} {
		for i := 0; i < 20; i++ {
			tok := randomToken(n)
			if len(tok) != n {
				t.Fatalf("randomToken(%d) has length %d", n, len(tok))
			}
			if err := checkRegistrationToken(tok); err != nil {
				t.Fatalf("randomToken(%d) = %q: %v", n, tok, err)
			}
			if n == 64 && seen[tok] {
				t.Fatalf("randomToken repeated %q", tok)
			}
			seen[tok] = true
		}
	}
}
