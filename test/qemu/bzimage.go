package qemu

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// compression names the format of a bzImage's compressed kernel.
type compression string

// Payload formats the harness can unpack (with the lz4 and xz commands).
const (
	compressionLZ4 compression = "lz4" // LZ4 legacy frame (Debian cloud kernels)
	compressionXZ  compression = "xz"  // Debian generic kernels
)

var (
	magicLZ4Legacy = []byte{0x02, 0x21, 0x4c, 0x18}         // LZ4 legacy frame, 0x184C2102 LE
	magicXZ        = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00} // XZ stream header
	magicHdrS      = []byte{'H', 'd', 'r', 'S'}             // x86 boot protocol header
	errNoPayload   = errors.New("no LZ4 or XZ kernel payload found in bzImage")
)

// kernelPayload locates the compressed vmlinux inside a bzImage.
//
// The x86 boot protocol (Documentation/arch/x86/boot.rst, protocol 2.08+) says
// where: the protected-mode code starts at (setup_sects+1)*512, and
// payload_offset (0x248) / payload_length (0x24c) give the compressed kernel
// relative to it. The kernel's build appends the decompressed size as a
// 4-byte trailer to the payload (scripts/Makefile.lib size_append), which
// lz4 would read as one more block: it is cut off here. When the header is
// older or inconsistent, the image is scanned for the XZ and then the LZ4
// magic instead, and the payload runs to the end of the file (the decoders
// then stop with an error after having written the whole kernel, which
// extractVmlinux tolerates when the output is a complete ELF).
func kernelPayload(bz []byte) (payload []byte, kind compression, err error) {
	if p, k, ok := payloadFromHeader(bz); ok {
		return p, k, nil
	}
	if i := bytes.Index(bz, magicXZ); i >= 0 {
		return bz[i:], compressionXZ, nil
	}
	if i := bytes.Index(bz, magicLZ4Legacy); i >= 0 {
		return bz[i:], compressionLZ4, nil
	}
	return nil, "", errNoPayload
}

func payloadFromHeader(bz []byte) ([]byte, compression, bool) {
	if len(bz) < 0x250 || !bytes.Equal(bz[0x202:0x206], magicHdrS) {
		return nil, "", false
	}
	if binary.LittleEndian.Uint16(bz[0x206:]) < 0x208 {
		return nil, "", false
	}
	setupSects := uint64(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4 // boot.rst: "If this field is 0, the real value is 4."
	}
	off := (setupSects+1)*512 + uint64(binary.LittleEndian.Uint32(bz[0x248:]))
	n := uint64(binary.LittleEndian.Uint32(bz[0x24c:]))
	if n < 8 || off > uint64(len(bz)) || n > uint64(len(bz))-off {
		return nil, "", false
	}
	p := bz[off : off+n]
	switch {
	case bytes.HasPrefix(p, magicLZ4Legacy):
		return p[:len(p)-4], compressionLZ4, true
	case bytes.HasPrefix(p, magicXZ):
		return p, compressionXZ, true
	}
	return nil, "", false
}

// pvhEntryNote is XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h):
// a kernel that carries it (CONFIG_PVH) can be started by QEMU's -kernel in
// 32-bit protected mode, without the real-mode setup and the decompressor,
// which saves seconds under TCG.
const pvhEntryNote = 18

// checkVmlinux reports an error unless r is a complete x86-64 ELF executable
// with a PVH entry note.
func checkVmlinux(r io.ReaderAt, size int64) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("vmlinux is not ELF: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return fmt.Errorf("vmlinux is %v %v, want EM_X86_64 ET_EXEC", f.Machine, f.Type)
	}
	pvh := false
	for _, p := range f.Progs {
		if p.Off > uint64(size) || p.Filesz > uint64(size)-p.Off {
			return fmt.Errorf("vmlinux is truncated: segment at %#x+%#x, file has %#x bytes", p.Off, p.Filesz, size)
		}
		if p.Type == elf.PT_NOTE && !pvh {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("read vmlinux notes: %w", err)
			}
			pvh = hasNote(b, f.ByteOrder, "Xen", pvhEntryNote)
		}
	}
	if !pvh {
		return errors.New("vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): kernel without CONFIG_PVH")
	}
	return nil
}

// hasNote reports whether the ELF note area b (a sequence of Elf_Nhdr
// namesz, descsz, type, then name and desc each padded to 4 bytes) holds a
// note of the given owner name and type.
func hasNote(b []byte, bo binary.ByteOrder, name string, typ uint32) bool {
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := uint64(bo.Uint32(b[0:]))
		descsz := uint64(bo.Uint32(b[4:]))
		t := bo.Uint32(b[8:])
		b = b[12:]
		if align4(namesz) > uint64(len(b)) {
			return false
		}
		n := string(bytes.TrimRight(b[:namesz], "\x00"))
		b = b[align4(namesz):]
		if align4(descsz) > uint64(len(b)) {
			return false
		}
		b = b[align4(descsz):]
		if n == name && t == typ {
			return true
		}
	}
	return false
}
