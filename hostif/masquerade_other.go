//go:build !linux

package hostif

import (
	"errors"
	"fmt"
)

// Masquerade is vhost-arcnet's own nftables table. On this system
// SetupMasquerade always fails.
type Masquerade struct{}

// SetupMasquerade fails with an error wrapping errors.ErrUnsupported:
// nftables is Linux only.
func SetupMasquerade(opt MasqueradeOptions) (*Masquerade, error) {
	return nil, fmt.Errorf("--masquerade (nftables) is Linux only: %w", errors.ErrUnsupported)
}

// Close does nothing.
func (m *Masquerade) Close() error { return nil }
