package vhostusertest

import (
	"golang.org/x/sys/unix"

	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// Guest memory: the regions of the guest's RAM, the files they live in,
// and the messages that share them with the backend.

// MemoryKind says what kind of shared memory backs the guest memory.
type MemoryKind int

const (
	// MemoryMemfd is a memfd per region (QEMU -object
	// memory-backend-memfd,share=on; cloud-hypervisor --memory shared=on).
	// Outside Linux: unlinked temporary files.
	MemoryMemfd MemoryKind = iota
	// MemoryShm is a POSIX shared memory object per region, unlinked once
	// opened (QEMU 9.1 -object memory-backend-shm, the way to share guest
	// memory on macOS). On Linux that is a file in /dev/shm.
	MemoryShm
)

// Region is one guest memory region shared with the backend.
type Region struct {
	GPA    uint64 // guest physical address of Data[0]
	UVA    uint64 // the frontend's "user address" of Data[0], sent in the memory table
	Size   uint64
	Offset uint64 // mmap_offset: where Data[0] is in the file
	Data   []byte // the frontend's mapping
	fd     int
	own    []byte // the whole mapping, when this region owns the file and the mapping
	next   uint64 // bump allocator for ring areas
}

func (f *Frontend) sharedMemory(size int) (int, []byte, error) {
	if f.opts.Memory == MemoryShm {
		return newShm("vhostusertest", size)
	}
	return newSharedMemory("vhostusertest", size)
}

func (f *Frontend) newRegion(gpa, size uint64) (*Region, error) {
	fd, data, err := f.sharedMemory(int(size))
	if err != nil {
		return nil, err
	}
	r := &Region{GPA: gpa, UVA: uvaBase + uint64(len(f.regions))<<36, Size: size, Data: data, fd: fd, own: data}
	f.regions = append(f.regions, r)
	return r, nil
}

// newSingleFile makes n regions of size bytes in one file: region i at
// offset i*size, guest address gpa(i).
func (f *Frontend) newSingleFile(n int, size uint64, gpa func(int) uint64) error {
	fd, data, err := f.sharedMemory(n * int(size))
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		off := uint64(i) * size
		r := &Region{GPA: gpa(i), UVA: uvaBase + uint64(i)<<36, Size: size, Offset: off,
			Data: data[off : off+size : off+size], fd: fd}
		if i == 0 {
			r.own = data
		}
		f.regions = append(f.regions, r)
	}
	return nil
}

// FD returns the fd of the file the region is in (for hand-made memory
// messages).
func (r *Region) FD() int { return r.fd }

// release unmaps and closes what the region owns.
func (r *Region) release() {
	if r.own != nil {
		_ = unix.Munmap(r.own)
		_ = unix.Close(r.fd)
		r.own = nil
	}
	r.Data = nil
	r.fd = -1
}

// memRegion encodes VhostUserMemoryRegion.
func memRegion(b []byte, r *Region) {
	nativeEndian.PutUint64(b[0:], r.GPA)
	nativeEndian.PutUint64(b[8:], r.Size)
	nativeEndian.PutUint64(b[16:], r.UVA)
	nativeEndian.PutUint64(b[24:], r.Offset) // mmap_offset
}

// SetMemTable sends every region with SET_MEM_TABLE (at most 8).
// With REPLY_ACK negotiated it asks for, and checks, the ack.
func (f *Frontend) SetMemTable() error {
	var flags uint32
	if f.proto&vhostuser.ProtocolFReplyAck != 0 {
		flags = flagNeedReply
	}
	return f.memTableMsg(flags)
}

// SendMemory sends the memory as QEMU 7.2 does: one ADD_MEM_REG per region
// with CONFIGURE_MEM_SLOTS, else SET_MEM_TABLE.
func (f *Frontend) SendMemory() error {
	if f.proto&vhostuser.ProtocolFConfigureMemSlots == 0 {
		return f.SetMemTable()
	}
	for _, r := range f.regions {
		if err := f.sendMemReg(vhostuser.ReqAddMemReg, r, r.fd); err != nil {
			return err
		}
	}
	f.memSent = true
	return nil
}

func (f *Frontend) sendMemReg(req vhostuser.Request, r *Region, fds ...int) error {
	b := make([]byte, 40)
	memRegion(b[8:], r)
	_, err := f.Request(req, false, b, fds...)
	return err
}

// newRegionAtTop allocates a new region of size bytes after the highest
// guest physical address of the regions so far (as a hotplug adds it).
func (f *Frontend) newRegionAtTop(size uint64) (*Region, error) {
	var gpa uint64
	for _, r := range f.regions {
		gpa = max(gpa, r.GPA+r.Size)
	}
	return f.newRegion(gpa, size)
}

// dropRegion forgets r (after the backend was told) and unmaps it.
func (f *Frontend) dropRegion(r *Region) {
	for i, x := range f.regions {
		if x == r {
			f.regions = append(f.regions[:i], f.regions[i+1:]...)
			break
		}
	}
	r.release()
}

// AddRegion allocates a new region of size bytes after the last one in
// guest physical address space and sends it with ADD_MEM_REG.
func (f *Frontend) AddRegion(size uint64) (*Region, error) {
	r, err := f.newRegionAtTop(size)
	if err != nil {
		return nil, err
	}
	return r, f.sendMemReg(vhostuser.ReqAddMemReg, r, r.fd)
}

// RemoveRegion sends REM_MEM_REG for r (without an fd, as the spec says
// a frontend SHOULD) and forgets it.
func (f *Frontend) RemoveRegion(r *Region) error {
	if err := f.sendMemReg(vhostuser.ReqRemMemReg, r); err != nil {
		return err
	}
	f.dropRegion(r)
	return nil
}

// UVA returns the frontend user address of guest address gpa.
func (f *Frontend) UVA(gpa uint64) uint64 {
	for _, r := range f.regions {
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			return r.UVA + (gpa - r.GPA)
		}
	}
	return 0
}
