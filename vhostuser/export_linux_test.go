package vhostuser

// ShrinkSealed exports shrinkSealed for tests.
var ShrinkSealed = shrinkSealed
