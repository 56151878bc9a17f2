//go:build linux

package load

import (
	"testing"
	"time"

	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
)

// newGuests makes n guests (not connected yet), MACs guestMAC(test, i),
// each a frontend with one 8 MiB region: both rings of 256 entries and
// their buffers (2 KiB slots, four per entry: 2 MiB a ring).
func newGuests(tb testing.TB, test byte, n int) []*guest {
	guests := make([]*guest, n)
	for i := range guests {
		guests[i] = &guest{
			f:   vhostusertest.New(tb, vhostusertest.Options{Regions: 1, RegionSize: 8 << 20, Timeout: 10 * time.Second}),
			mac: guestMAC(test, i),
		}
	}
	return guests
}
