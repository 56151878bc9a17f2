//go:build linux

package virtio_test

import (
	"errors"
	"fmt"
	"runtime/debug"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/virtio"
	"github.com/arcnet/vhost-arcnet/virtio/virtiotest"
)

// memfdMapping maps a memfd of size bytes and returns the mapping and a
// function that truncates the file to 0.
func memfdMapping(t *testing.T, size int) ([]byte, func()) {
	t.Helper()
	fd, err := unix.MemfdCreate("fault", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Close(fd) })
	require.NoError(t, unix.Ftruncate(fd, int64(size)))
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Munmap(b) })
	return b, func() { require.NoError(t, unix.Ftruncate(fd, 0)) }
}

// guarded runs fn with faults turned into panics and returns what
// HandleFault made of the panic (nil: none), or the panic HandleFault
// raised again.
func guarded(fn func()) (f *virtio.Fault, repanic any) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			repanic = r
		}
	}()
	func() {
		defer func() { f = virtio.HandleFault(recover()) }()
		fn()
	}()
	return f, nil
}

func TestHandleFault(t *testing.T) {
	b, shrink := memfdMapping(t, 1<<16)
	var told []*virtio.Fault
	w := virtio.WatchFaults(b, func(f *virtio.Fault) { told = append(told, f) })
	defer w.Stop()
	b[100] = 1 // fine while the file is long enough

	// No panic: nil.
	f, re := guarded(func() {})
	require.Nil(t, f)
	require.Nil(t, re)

	// A nil dereference while no watched mapping faults is a bug: it
	// panics on.
	var p *int
	_, re = guarded(func() { _ = *p })
	require.NotNil(t, re)
	// So does any other panic.
	_, re = guarded(func() { panic("boom") })
	require.Equal(t, "boom", re)

	shrink()
	f, re = guarded(func() { b[1<<15] = 2 })
	require.Nil(t, re)
	require.NotNil(t, f)
	require.ErrorIs(t, f, virtio.ErrFault)
	require.True(t, f.Addr == 0 || w.Contains(f.Addr), "fault at %#x", f.Addr) // 0: qemu-user
	require.Len(t, told, 1)

	// A second fault is returned but not told again.
	f, re = guarded(func() { sink = b[7] })
	require.Nil(t, re)
	require.NotNil(t, f)
	require.Len(t, told, 1)

	// A fault without an address (what qemu-user reports) is found by
	// probing the watched mappings: the nil dereference stands for it.
	f, re = guarded(func() { _ = *p })
	require.Nil(t, re)
	require.NotNil(t, f)
	require.Zero(t, f.Addr)

	// Once the watch is stopped, a fault in the mapping is nobody's: it
	// panics on.
	w.Stop()
	_, re = guarded(func() { sink = b[9] })
	require.NotNil(t, re)
	var rerr interface{ RuntimeError() }
	require.True(t, errors.As(re.(error), &rerr))
}

// TestQueueFaultHooks: OnBroken is called once, with the queue's error,
// when the queue breaks (a guest error or Break); Faulted tells a fault
// in the queue's memory from one elsewhere; Rewind undoes pops and pushes
// since a Mark.
func TestQueueFaultHooks(t *testing.T) {
	mem, shrink := memfdMapping(t, 1<<20)
	d, err := virtiotest.NewDriver(mem, 0x10000, 64, virtiotest.DriverOptions{})
	require.NoError(t, err)
	m, err := virtio.NewMemory([]virtio.Region{{GuestPhysAddr: 0x10000, Size: uint64(len(mem)), UserAddr: 0x10000, Data: mem}})
	require.NoError(t, err)
	q, err := virtio.NewQueue(m, d.Config(virtio.FEventIdx))
	require.NoError(t, err)
	var broken []error
	q.OnBroken(func(err error) { broken = append(broken, err) })

	// Mark and Rewind.
	_, err = d.AddOut(make([]byte, 10))
	require.NoError(t, err)
	d.Publish()
	mark := q.Mark()
	var c virtio.Chain
	ok, err := q.Pop(&c)
	require.True(t, ok)
	require.NoError(t, err)
	require.NoError(t, q.Push(c.Head, 0))
	q.Rewind(mark)
	require.Equal(t, mark, q.Mark())
	ok, err = q.Pop(&c)
	require.True(t, ok)
	require.NoError(t, err)

	// Faulted: by address, and by probing when there is none.
	other, shrinkOther := memfdMapping(t, 1<<16)
	wq := virtio.WatchFaults(mem, nil)
	defer wq.Stop()
	wo := virtio.WatchFaults(other, nil)
	defer wo.Stop()
	shrinkOther()
	f, re := guarded(func() { other[5] = 1 })
	require.Nil(t, re)
	require.False(t, q.Faulted(f))
	require.False(t, q.Faulted(&virtio.Fault{}))
	shrink()
	require.True(t, q.Faulted(&virtio.Fault{}))

	// Break calls OnBroken once; later errors do not.
	err = q.Break(f)
	require.ErrorIs(t, err, virtio.ErrBroken)
	require.ErrorIs(t, err, virtio.ErrFault)
	_ = q.Break(errors.New("again"))
	require.Len(t, broken, 1)
	require.Equal(t, err, broken[0])
}

// sink keeps the tests' reads of guest memory from being optimised away.
var sink byte

// addrError is a runtime.Error with the address a platform reported for
// a fault, as the runtime's own fault panics carry one.
type addrError struct{ addr uintptr }

func (e addrError) Error() string { return fmt.Sprintf("fault at %#x", e.addr) }
func (addrError) RuntimeError()   {}
func (e addrError) Addr() uintptr { return e.addr }

// TestHandleFaultWrongAddress: a fault whose address lies in no watched
// mapping (qemu-user reported one once in CI) is still found by probing
// when a watched mapping's file was cut short, with Addr 0; with none cut
// short it is the process's own and panics on.
func TestHandleFaultWrongAddress(t *testing.T) {
	b, shrink := memfdMapping(t, 1<<16)
	var told int
	w := virtio.WatchFaults(b, func(*virtio.Fault) { told++ })
	defer w.Stop()
	elsewhere := uintptr(unsafe.Pointer(&sink))
	inside := uintptr(unsafe.Pointer(&b[100]))

	cases := []struct {
		name    string
		addr    uintptr
		shrunk  bool
		found   bool
		gotAddr uintptr
	}{
		{name: "elsewhere, mapping whole", addr: elsewhere},
		{name: "inside, mapping whole", addr: inside, found: true, gotAddr: inside}, // by address, no probe
		{name: "elsewhere, mapping cut short", addr: elsewhere, shrunk: true, found: true},
		{name: "inside, mapping cut short", addr: inside, shrunk: true, found: true, gotAddr: inside},
	}
	for _, tc := range cases {
		if tc.shrunk {
			shrink()
		}
		var f *virtio.Fault
		var re any
		func() {
			defer func() { re = recover() }()
			f = virtio.HandleFault(addrError{tc.addr})
		}()
		if !tc.found {
			require.Equal(t, addrError{tc.addr}, re, tc.name)
			continue
		}
		require.Nil(t, re, tc.name)
		require.NotNil(t, f, tc.name)
		require.Equal(t, tc.gotAddr, f.Addr, tc.name)
	}
	require.Equal(t, 1, told, "the watch is told once")
}
