package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// unitFile is a systemd unit file read minimally: section -> key ->
// values (a key may repeat), with backslash continuations joined.
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	u := unitFile{}
	section := ""
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			require.True(t, strings.HasSuffix(line, "]"), "%s:%d: %q", path, i+1, line)
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "%s:%d: want KEY=VALUE: %q", path, i+1, line)
			require.NotEmpty(t, section, "%s:%d: a key before the first section", path, i+1)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// The example systemd units and tmpfiles entry in contrib/ agree with the
// program and with each other: ExecStart's flags exist and parse;
// ExecReload sends SIGHUP; exit status 2 (a wrong configuration) is not
// restarted; every ListenStream= of the socket unit is a --socket or
// --control path; the directories of the sockets and of the lease file are
// made by the tmpfiles entry; the user exists in the sysusers entry.
func TestContribUnits(t *testing.T) {
	const dir = "../../contrib"
	svc := readUnit(t, filepath.Join(dir, "systemd", "vhost-arcnet.service"))
	sock := readUnit(t, filepath.Join(dir, "systemd", "vhost-arcnet.socket"))

	exec := svc["Service"]["ExecStart"]
	require.Len(t, exec, 1)
	args := strings.Fields(exec[0])
	require.Equal(t, "vhost-arcnet", filepath.Base(args[0]))
	f := newFlags()
	require.NoError(t, f.parse(args[1:], io.Discard), "ExecStart's flags: %q", args[1:])
	require.NotEmpty(t, f.config.v, "the unit reads a config file (and so can reload it)")
	require.Equal(t, []string{"/bin/kill -HUP $MAINPID"}, svc["Service"]["ExecReload"])
	require.Contains(t, strings.Fields(svc["Service"]["RestartPreventExitStatus"][0]), "2")
	require.Equal(t, 2, exitUsage)
	require.Contains(t, svc["Unit"]["Requires"], "vhost-arcnet.socket")

	paths := append(slices.Clone(f.sockets.vals), f.control.v)
	listen := sock["Socket"]["ListenStream"]
	require.NotEmpty(t, listen)
	for _, l := range listen {
		require.True(t, filepath.IsAbs(l), "ListenStream=%s: a unix socket path", l)
		require.Contains(t, paths, l, "ListenStream=%s is a --socket or --control path of ExecStart", l)
	}

	b, err := os.ReadFile(filepath.Join(dir, "tmpfiles.d", "vhost-arcnet.conf"))
	require.NoError(t, err)
	made := map[string]string{} // directory -> owner
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if len(fs) == 0 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		require.Len(t, fs, 6, "tmpfiles line %q: TYPE PATH MODE USER GROUP AGE", line)
		require.Equal(t, "d", fs[0])
		made[fs[1]] = fs[3]
	}
	user := svc["Service"]["User"][0]
	for _, p := range append(paths, f.leaseFile.v) {
		owner, ok := made[filepath.Dir(p)]
		require.True(t, ok, "tmpfiles makes %s (for %s)", filepath.Dir(p), p)
		require.Equal(t, user, owner, "%s belongs to the service's user", filepath.Dir(p))
		require.Contains(t, svc["Service"]["ReadWritePaths"][0], filepath.Dir(p))
	}
	require.Equal(t, user, sock["Socket"]["SocketUser"][0])

	b, err = os.ReadFile(filepath.Join(dir, "sysusers.d", "vhost-arcnet.conf"))
	require.NoError(t, err)
	require.Regexp(t, `(?m)^u `+user+` `, string(b))
}
