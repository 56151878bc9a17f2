package vhostuser

// maxSocketPath is the longest unix socket path: sun_path is 108 bytes on
// Linux, with the terminating NUL.
const maxSocketPath = 107
