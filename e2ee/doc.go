// Package e2ee is the server side of end-to-end encryption key management (client-server API,
// module "End-to-End Encryption"): device identity keys, one-time and fallback keys, cross-signing
// keys and signatures, and the device_lists stream that tells clients whose keys changed. The
// server stores public keys and signatures and relays them; it never holds a private key.
//
// Every change is one storage transaction that also records a device_lists position for the user
// whose keys changed (stream counter "device_lists", table device_list_changes); after commit the
// Waker wakes the syncs of everyone sharing a room with that user, which read the stream again.
//
//	/keys/upload ─────────────┐
//	/keys/device_signing ─────┤  one transaction: keys + device_list_changes(user, pos)
//	/keys/signatures/upload ──┤
//	device deleted (storage) ─┘
//	                          ▼
//	              Waker.WakeSharing(user) ──▶ woken /sync reads ChangedUsers(from, to)
//
// Claims hand each one-time key out at most once: one statement picks and deletes a key (see
// storage.Conn.ClaimOneTimeKey), and a claim visits devices in sorted order so that two claims
// never wait on each other. When a device has no one-time key left, its fallback key is returned
// and marked used.
//
// Users of other servers go through RemoteKeys (federation); without it they are reported in
// "failures".
package e2ee
