//go:build linux

package virtio

import (
	"encoding/binary"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPlainHeaderStoresOnlyWhatDiffers checks that plainHeader leaves a
// word of the header that already holds its value unwritten (the cache
// line stays shared with the driver, see plainHeader): the header lies
// across a page boundary, and the page of the word that must not be
// stored is read-only, so a store there faults.
func TestPlainHeaderStoresOnlyWhatDiffers(t *testing.T) {
	page := unix.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Munmap(mem) })

	hdr := func(flags byte, numBuffers uint16) []byte {
		h := make([]byte, NetHdrSize)
		h[0] = flags
		binary.LittleEndian.PutUint16(h[10:12], numBuffers)
		return h
	}
	cases := []struct {
		name   string
		hdrLen int
		n      int
		before []byte
		// split: where the header starts relative to the page
		// boundary (bytes before it); readOnly: which page is
		// read-only during the call (0: none, 1: first, 2: second).
		split, readOnly int
		fault           bool
		want            []byte
	}{
		{name: "already in place, both pages read-only", hdrLen: NetHdrSize, n: 1, before: hdr(0, 1), split: 8, readOnly: 3, want: hdr(0, 1)},
		{name: "num_buffers differs, first word read-only", hdrLen: NetHdrSize, n: 1, before: hdr(0, 2), split: 8, readOnly: 1, want: hdr(0, 1)},
		{name: "flags differ, num_buffers read-only", hdrLen: NetHdrSize, n: 1, before: hdr(1, 1), split: 8, readOnly: 2, want: hdr(0, 1)},
		{name: "merged frame, first word read-only", hdrLen: NetHdrSize, n: 3, before: hdr(0, 1), split: 8, readOnly: 1, want: hdr(0, 3)},
		{name: "both differ", hdrLen: NetHdrSize, n: 1, before: hdr(0x5a, 7), split: 6, want: hdr(0, 1)},
		// The check of the test itself: a word that differs on a
		// read-only page is stored, and faults.
		{name: "num_buffers differs on a read-only page", hdrLen: NetHdrSize, n: 1, before: hdr(0, 2), split: 8, readOnly: 2, fault: true},
		{name: "legacy header in place", hdrLen: NetHdrSizeLegacy, n: 1, before: hdr(0, 0)[:NetHdrSizeLegacy], split: 8, readOnly: 3, want: hdr(0, 0)[:NetHdrSizeLegacy]},
		{name: "legacy header differs, first word read-only", hdrLen: NetHdrSizeLegacy, n: 1,
			before: []byte{0, 0, 0, 0, 0, 0, 0, 0, 9, 9}, split: 8, readOnly: 1, want: hdr(0, 0)[:NetHdrSizeLegacy]},
	}
	protect := func(which, prot int) {
		for p := 1; p <= 2; p++ {
			if which&p != 0 {
				require.NoError(t, unix.Mprotect(mem[(p-1)*page:p*page], prot))
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := mem[page-tc.split : page-tc.split+tc.hdrLen]
			copy(b, tc.before)
			protect(tc.readOnly, unix.PROT_READ)
			faulted := func() (faulted bool) {
				defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
				defer func() { faulted = recover() != nil }()
				plainHeader(b, tc.hdrLen, tc.n)
				return false
			}()
			protect(3, unix.PROT_READ|unix.PROT_WRITE)
			require.Equal(t, tc.fault, faulted)
			if !tc.fault {
				require.Equal(t, tc.want, []byte(b))
			}
		})
	}
}
