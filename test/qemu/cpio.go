package qemu

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// File modes of cpio entries (the S_IF* bits of <sys/stat.h>, which the newc
// format carries in c_mode).
const (
	cpioModeDir     = 0o040000
	cpioModeRegular = 0o100000
	cpioModeSymlink = 0o120000
	cpioModeCharDev = 0o020000
)

// cpioEntry is one member of an initramfs archive.
type cpioEntry struct {
	Name   string // path without a leading "/", e.g. "bin/busybox"
	Mode   uint32 // type bits (cpioMode*) | permission bits
	Data   []byte // file contents, or the target of a symlink
	DevMaj uint32 // device numbers of a character device
	DevMin uint32
}

// cpioDir returns a directory entry.
func cpioDir(name string) cpioEntry { return cpioEntry{Name: name, Mode: cpioModeDir | 0o755} }

// cpioFile returns a regular file entry.
func cpioFile(name string, perm fs.FileMode, data []byte) cpioEntry {
	return cpioEntry{Name: name, Mode: cpioModeRegular | uint32(perm.Perm()), Data: data}
}

// cpioSymlink returns a symbolic link entry pointing at target.
func cpioSymlink(name, target string) cpioEntry {
	return cpioEntry{Name: name, Mode: cpioModeSymlink | 0o777, Data: []byte(target)}
}

// cpioCharDev returns a character device entry.
func cpioCharDev(name string, perm fs.FileMode, major, minor uint32) cpioEntry {
	return cpioEntry{Name: name, Mode: cpioModeCharDev | uint32(perm.Perm()), DevMaj: major, DevMin: minor}
}

// writeCPIO writes entries as a "newc" (SVR4 without CRC, magic 070701) cpio
// archive, the format the kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst). Every header
// field is 8 hex digits; the header+name and the data are each padded to a
// multiple of 4 bytes. Timestamps and owners are zero, so the output depends
// on the entries alone (a stable cache key). Parent directories must come
// before their children.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	bw := bufio.NewWriter(w)
	var n int64
	write := func(p []byte) {
		m, _ := bw.Write(p) // bufio keeps the first error; checked at Flush
		n += int64(m)
	}
	pad := func() {
		if r := n % 4; r != 0 {
			write(make([]byte, 4-r))
		}
	}
	for i, e := range append(entries, cpioEntry{Name: "TRAILER!!!"}) {
		name := strings.TrimPrefix(e.Name, "/")
		if name == "" || strings.Contains(name, "\x00") || path.Clean(name) != name {
			return fmt.Errorf("cpio entry %d: bad name %q", i, e.Name)
		}
		nlink := 1
		if e.Mode&0o170000 == cpioModeDir {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1,    // c_ino
			e.Mode, // c_mode
			0, 0,   // c_uid, c_gid
			nlink,       // c_nlink
			0,           // c_mtime
			len(e.Data), // c_filesize
			0, 0,        // c_devmajor, c_devminor (of the file system)
			e.DevMaj, e.DevMin, // c_rdevmajor, c_rdevminor
			len(name)+1, // c_namesize, with the NUL
			0,           // c_check
		)
		write([]byte(hdr))
		write([]byte(name + "\x00"))
		pad()
		write(e.Data)
		pad()
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write cpio: %w", err)
	}
	return nil
}

// writeInitramfs writes entries as a gzip-compressed newc archive.
func writeInitramfs(w io.Writer, entries []cpioEntry) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return errors.Join(writeCPIO(zw, entries), zw.Close())
}
