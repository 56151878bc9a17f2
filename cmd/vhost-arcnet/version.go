package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version describes this binary from its build information: the module
// version (a tag when built with `go install ...@vX`, "(devel)" from a
// checkout), the VCS revision and time and whether the tree was modified,
// the Go version and the platform.
func version() string {
	v, rev, when, dirty := "(unknown)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	s := "vhost-arcnet " + v
	if rev != "" {
		s += fmt.Sprintf(" (%s %s)", rev, when)
	}
	return s + fmt.Sprintf(" %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
