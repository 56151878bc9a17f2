//go:build !linux

package vhostuser

// maxSocketPath is the longest unix socket path: sun_path is 104 bytes on
// macOS and the BSDs, with the terminating NUL.
const maxSocketPath = 103
