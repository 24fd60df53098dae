// Package e2ee will hold the server side of end-to-end encryption: device keys, one-time and
// fallback keys, the to-device inbox, device lists, cross-signing and key backup (issue 5). The
// server stores public keys and relays ciphertext; it never holds a private key or a plaintext
// message of an encrypted room.
package e2ee
