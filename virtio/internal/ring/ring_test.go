package ring

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

func TestLoadStore16LittleEndian(t *testing.T) {
	b := make([]byte, 8)
	StoreRelease16(b[2:], 0x1234)
	if b[2] != 0x34 || b[3] != 0x12 {
		t.Fatalf("stored % x, want little-endian 34 12", b[2:4])
	}
	b[4], b[5] = 0xcd, 0xab
	if v := LoadAcquire16(b[4:]); v != 0xabcd {
		t.Fatalf("loaded %#x, want 0xabcd", v)
	}
	FullFence()
}

func TestOr32(t *testing.T) {
	b := make([]byte, 8)
	Or32(b[4:], 1|1<<9|1<<31)
	want := []byte{0, 0, 0, 0, 0x01, 0x02, 0, 0x80}
	if string(b) != string(want) {
		t.Fatalf("got % x, want % x", b, want)
	}
}

func TestOr32Concurrent(t *testing.T) {
	b := make([]byte, 4)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Or32(b, 1<<i)
		}()
	}
	wg.Wait()
	if string(b) != "\xff\xff\xff\xff" {
		t.Fatalf("lost bits: % x", b)
	}
}

func TestAligned(t *testing.T) {
	b := make([]byte, 64) // may live on the stack: find a 16-byte boundary
	o := 0
	for !Aligned(b[o:], 16) {
		o++
	}
	if Aligned(b[o+1:], 2) || !Aligned(b[o+2:], 2) || Aligned(b[o+2:], 4) || !Aligned(b[o+8:], 8) || !Aligned(nil, 4096) {
		t.Fatal("Aligned is wrong")
	}
}

func TestBoundsChecked(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a one-byte slice was accepted")
		}
	}()
	LoadAcquire16(make([]byte, 2)[:1])
}

func TestLoadAcquireHi16(t *testing.T) {
	words := make([]uint32, 2) // 4-byte aligned backing
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), 8)
	copy(b, []byte{0x11, 0x22, 0x34, 0x12, 0x55, 0x66, 0xcd, 0xab})
	for _, tc := range []struct {
		off  int
		want uint16
	}{{0, 0x1234}, {4, 0xabcd}} {
		if v := LoadAcquireHi16(b[tc.off:]); v != tc.want {
			t.Fatalf("word at %d: loaded %#x, want %#x", tc.off, v, tc.want)
		}
		if v := LoadAcquire16(b[tc.off+2:]); v != tc.want {
			t.Fatalf("LoadAcquire16 of the upper half at %d: %#x, want %#x", tc.off, v, tc.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a three-byte slice was accepted")
		}
	}()
	LoadAcquireHi16(b[:3])
}

// TestFullFenceStoreLoad is the store-buffering litmus test (Intel SDM vol.
// 3 §9.2.3.4: "Stores Are Not Reordered With Earlier Loads" does not hold
// for a load after a store to another address): two threads each store
// their flag, FullFence, and load the other's. Without the fence both may
// load the old value in the same round (each store still in its CPU's
// store buffer); with it at least one sees the other's store, which is
// what every notification suppression handshake relies on (virtio.Idle).
// Needs two CPUs to run the sides at once; bounded in rounds and time.
func TestFullFenceStoreLoad(t *testing.T) {
	if runtime.NumCPU() < 2 || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two CPUs")
	}
	mem := make([]byte, 256) // the two flags on lines of their own
	flag := [2][]byte{mem[0:2], mem[128:130]}
	var arrive atomic.Uint32  // round barrier: 2 arrivals a round
	var seen [2]atomic.Uint32 // what each side loaded this round
	var done atomic.Uint32    // side 1's last finished round
	rounds := uint32(200000)
	deadline := time.Now().Add(2 * time.Second)
	side := func(me int, r uint32) {
		arrive.Add(1)
		for arrive.Load() < 2*r {
		}
		StoreRelease16(flag[me], uint16(r))
		FullFence()
		seen[me].Store(uint32(LoadAcquire16(flag[1-me])))
	}
	stop := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for r := uint32(1); ; r++ {
			select {
			case <-stop:
				return
			default:
			}
			side(1, r)
			done.Store(r)
		}
	}()
	defer close(stop)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := uint32(1)
	for ; r <= rounds && time.Now().Before(deadline); r++ {
		side(0, r)
		for done.Load() < r {
		}
		if a, b := seen[0].Load(), seen[1].Load(); a != r&0xffff && b != r&0xffff {
			t.Fatalf("round %d: each side loaded the other's old flag (%d, %d): a load passed the fence", r, a, b)
		}
	}
	t.Logf("%d rounds", r-1)
}

// TestPrefetch: Addr is the address of b[off]; Prefetch of lines inside
// and outside any mapping (a hint: it neither faults nor reads) returns.
func TestPrefetch(t *testing.T) {
	b := make([]byte, 100)
	if Addr(b, 99)-Addr(b, 0) != 99 || Addr(b, 0) != uintptr(unsafe.Pointer(&b[0])) {
		t.Fatal("Addr is not the address of b[off]")
	}
	Prefetch([]uintptr{Addr(b, 0), Addr(b, 64), 0, 8, ^uintptr(0)})
	PrefetchW([]uintptr{Addr(b, 0), Addr(b, 64), 0, 8, ^uintptr(0)})
	PrefetchW(nil)
	Prefetch(nil)
}
