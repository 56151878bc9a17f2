//go:build race

package vhostuser

// raceEnabled: the race detector allocates on its own; allocation guards
// are checked in normal builds only.
const raceEnabled = true
