package ring

import (
	"sync"
	"testing"
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
