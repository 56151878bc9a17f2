package services

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// resolverDir holds the per-domain resolver files (resolver(5)).
const resolverDir = "/etc/resolver"

// systemResolvers reads macOS's resolver configuration: the output of
// /usr/sbin/scutil --dns (configd's, which already includes the files of
// /etc/resolver/ and every VPN's servers). If scutil cannot be run or its
// output not parsed, the files of /etc/resolver/ are read instead, with
// /etc/resolv.conf for the defaults.
func systemResolvers() ([]SystemResolver, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/sbin/scutil", "--dns").Output()
	if err == nil {
		rs, perr := ParseScutilDNS(out)
		if perr == nil {
			return rs, nil
		}
		err = perr
	}
	files, ferr := resolverFiles()
	if ferr != nil || len(files) == 0 {
		return nil, errors.Join(fmt.Errorf("scutil --dns: %w", err), ferr)
	}
	// The defaults come from resolv.conf (same syntax): the first
	// resolver listed is the default one.
	def := SystemResolver{}
	if b, rerr := os.ReadFile(DefaultResolvConf); rerr == nil {
		if r, perr := ParseResolverFile("", b); perr == nil {
			def = r
		}
	}
	return append([]SystemResolver{def}, files...), nil
}

// resolverFiles parses every file of /etc/resolver/.
func resolverFiles() ([]SystemResolver, error) {
	ents, err := os.ReadDir(resolverDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []SystemResolver
	for _, e := range ents {
		if !e.Type().IsRegular() || len(rs) >= maxSystemResolvers {
			continue
		}
		b, err := os.ReadFile(filepath.Join(resolverDir, e.Name()))
		if err != nil {
			return nil, err
		}
		r, err := ParseResolverFile(e.Name(), b)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}
