//go:build !darwin

package services

// systemResolvers is nil here: resolv.conf is the system's resolver
// configuration on Linux and the BSDs.
var systemResolvers func() ([]SystemResolver, error)
