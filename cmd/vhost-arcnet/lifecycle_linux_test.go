//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/arcnet/vhost-arcnet/internal/testlog"
	"github.com/arcnet/vhost-arcnet/vhostuser/vhostusertest"
)

// proc is vhost-arcnet's main run by the test binary (TestMain) as a
// process of its own.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *testlog.Buffer
	exited chan error
}

// startMain starts cmd (the test binary, or a wrapper that execs it) as
// vhost-arcnet with args; it is killed at the end of the test if it is
// still running.
func startMain(t *testing.T, cmd *exec.Cmd, args ...string) *proc {
	t.Helper()
	a, err := json.Marshal(args)
	require.NoError(t, err)
	cmd.Env = append(cmd.Env, runEnv+"="+string(a))
	p := &proc{t: t, cmd: cmd, out: &testlog.Buffer{}, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start())
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-p.exited:
			p.exited <- err
		default:
			_ = cmd.Process.Kill() // by the PID this test started
			<-p.exited
		}
		if t.Failed() {
			t.Logf("vhost-arcnet's output:\n%s", p.out.String())
		}
	})
	return p
}

// mainCommand is the test binary as vhost-arcnet, with the environment
// of the test less any LISTEN_* variables.
func mainCommand() *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LISTEN_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	return cmd
}

// waitUp waits until the control socket ctl answers.
func (p *proc) waitUp(ctl string) {
	p.t.Helper()
	var died error
	require.Eventually(p.t, func() bool {
		select {
		case err := <-p.exited:
			p.exited <- err
			died = fmt.Errorf("vhost-arcnet exited: %v", err)
			return true
		default:
		}
		_, err := newCtlClient(ctl).do("GET", "/v1/ports", nil)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "vhost-arcnet did not come up")
	require.NoError(p.t, died)
}

// stop sends sig and returns the exit status.
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
	return p.wait()
}

// wait returns the exit status once the process ends.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		if err == nil {
			return 0
		}
		ee, ok := err.(*exec.ExitError)
		require.True(p.t, ok, "%v", err)
		return ee.ExitCode()
	case <-time.After(20 * time.Second):
		p.t.Fatal("vhost-arcnet did not exit")
		return -1
	}
}

// attach connects a Go frontend to sock and gets a lease for testGuestMAC.
func attach(t *testing.T, sock string) *testGuest {
	t.Helper()
	f := vhostusertest.New(t, vhostusertest.Options{Timeout: 5 * time.Second})
	require.NoError(t, f.Dial(sock))
	require.NoError(t, f.Negotiate(0))
	require.NoError(t, f.SetupQueues(1, 256))
	g := &testGuest{t: t, f: f}
	g.ip = g.dhcp(testGuestMAC, "vm1", netip.Addr{})
	require.True(t, g.ip.IsValid())
	return g
}

// SIGTERM with a guest attached: exit status 0, the vhost-user and control
// sockets it made are gone (no temporary names left either), the lease
// file holds the guest's lease, and the log says what happened.
func TestSIGTERMLeavesNothing(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := shortDir(t)
			sock, ctl, leases := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "leases.json")
			p := startMain(t, mainCommand(), "--socket", sock, "--control", ctl, "--lease-file", leases,
				"--dns-upstream", "127.0.0.1:9")
			p.waitUp(ctl)
			g := attach(t, sock)

			require.Equal(t, exitOK, p.stop(sig))
			for _, path := range []string{sock, ctl} {
				_, err := os.Lstat(path)
				require.True(t, os.IsNotExist(err), "%s is removed at exit: %v", path, err)
			}
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			require.Equal(t, []string{"leases.json"}, names, "nothing but the lease file is left")
			b, err := os.ReadFile(leases)
			require.NoError(t, err)
			require.Contains(t, string(b), g.ip.String(), "the lease is in the file")
			require.Contains(t, string(b), testGuestMAC.String())
			out := p.out.String()
			require.Contains(t, out, "msg=stopping cause=")
			require.Contains(t, out, "msg=stopped")
			require.NotContains(t, out, "level=ERROR")
		})
	}
}

// The exit statuses of the README: 2 for a wrong command line or config
// file (nothing started), 1 for a failure to start (or while running).
func TestExitStatus(t *testing.T) {
	dir := shortDir(t)
	badFile := filepath.Join(dir, "bad.toml")
	require.NoError(t, os.WriteFile(badFile, []byte("socket = \"/tmp/x.sock\"\nmtu = \"big\"\n"), 0o600))
	inUse := filepath.Join(dir, "used.sock")
	l, err := net.Listen("unix", inUse)
	require.NoError(t, err)
	defer l.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"--sockt", "x"}, exitUsage, "flag provided but not defined: -sockt"},
		{"bad value", []string{"--socket", "x", "--mtu", "5"}, exitUsage, `--mtu "5": want 68..65535`},
		{"bad file", []string{"--config", badFile}, exitUsage, "bad.toml:2: mtu string \"big\": want an integer"},
		{"nothing to serve", nil, exitUsage, "nothing to serve"},
		{"socket dir missing", []string{"--socket", filepath.Join(dir, "no", "vm.sock"), "--lease-file", "none"}, exitFailure, "no such file or directory"},
		{"socket in use", []string{"--socket", inUse, "--lease-file", "none"}, exitFailure, "in use by another process"},
		{"help", []string{"-h"}, exitOK, "Usage:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startMain(t, mainCommand(), tc.args...)
			require.Equal(t, tc.code, p.wait(), p.out.String())
			require.Contains(t, p.out.String(), tc.msg)
		})
	}
}

// Socket activation: a parent (as systemd does) makes the vhost-user and
// control sockets, passes them as fds 3 and 4 with LISTEN_FDS,
// LISTEN_PID (set by a shell that then execs vhost-arcnet, keeping its
// pid) and LISTEN_FDNAMES. vhost-arcnet serves them: a Go frontend
// attaches and gets a lease, the control API answers; it leaves the
// sockets' files, modes and groups alone (--socket-group too) and does
// not remove them at exit, and the parent's listeners still work after it.
func TestSocketActivation(t *testing.T) {
	dir := shortDir(t)
	sock, ctl := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock")
	listen := func(path string, mode os.FileMode) (*net.UnixListener, *os.File) {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		require.NoError(t, os.Chmod(path, mode))
		f, err := l.File()
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return l, f
	}
	vmL, vmF := listen(sock, 0o660)
	_, ctlF := listen(ctl, 0o600)
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, os.Args[0])
	cmd.Env = append(mainCommand().Env, "LISTEN_FDS=2", "LISTEN_FDNAMES=vhost-arcnet.socket:control")
	cmd.ExtraFiles = []*os.File{vmF, ctlF}
	p := startMain(t, cmd, "--socket", sock, "--control", ctl, "--lease-file", "none", "--dns-upstream", "127.0.0.1:9",
		"--socket-group", "47113")
	p.waitUp(ctl)
	g := attach(t, sock)
	var ps apiPorts
	b, err := newCtlClient(ctl).do("GET", "/v1/ports", nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &ps))
	require.Len(t, ps.Ports, 1)
	require.Equal(t, g.ip.String(), ps.Ports[0].Address)
	require.Equal(t, sock, ps.Ports[0].Socket)
	out := p.out.String()
	require.Contains(t, out, "msg=listening path="+sock+" uplink=none inherited=true")
	require.Contains(t, out, "msg=\"control API\" socket="+ctl+" inherited=true")

	require.Equal(t, exitOK, p.stop(syscall.SIGTERM))
	fi, err := os.Lstat(sock)
	require.NoError(t, err, "an inherited socket stays")
	require.Equal(t, os.FileMode(0o660), fi.Mode().Perm(), "with the mode its maker gave it")
	require.EqualValues(t, os.Getgid(), fi.Sys().(*syscall.Stat_t).Gid, "and its group (--socket-group is for sockets vhost-arcnet makes)")
	fi, err = os.Lstat(ctl)
	require.NoError(t, err, "an inherited control socket stays")
	require.EqualValues(t, os.Getgid(), fi.Sys().(*syscall.Stat_t).Gid, "with its group")
	// The parent's listener is still good: the next frontend's connection
	// waits in it for the next vhost-arcnet.
	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	c.Close()
	require.NoError(t, vmL.SetDeadline(time.Now().Add(5*time.Second)))
	c2, err := vmL.Accept()
	require.NoError(t, err)
	c2.Close()
}

// An inherited socket that matches no --socket or --control path is an
// error that says what to do; fds meant for another process are ignored.
func TestSocketActivationMismatch(t *testing.T) {
	dir := shortDir(t)
	other := filepath.Join(dir, "other.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: other, Net: "unix"})
	require.NoError(t, err)
	defer l.Close()
	f, err := l.File()
	require.NoError(t, err)
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, os.Args[0])
	cmd.Env = append(mainCommand().Env, "LISTEN_FDS=1", "LISTEN_FDNAMES=stray")
	cmd.ExtraFiles = []*os.File{f}
	p := startMain(t, cmd, "--socket", filepath.Join(dir, "vm.sock"), "--lease-file", "none")
	require.Equal(t, exitFailure, p.wait())
	require.Contains(t, p.out.String(), "fd 3 (name stray, "+other+") matches no --socket or --control path")
	_, err = os.Lstat(filepath.Join(dir, "vm.sock"))
	require.True(t, os.IsNotExist(err), "the socket it made on the way is removed")

	// LISTEN_PID of another process: not for us, the path is made as usual.
	cmd = mainCommand()
	cmd.Env = append(cmd.Env, "LISTEN_FDS=1", "LISTEN_PID=1")
	cmd.ExtraFiles = []*os.File{f}
	ctl := filepath.Join(dir, "control.sock")
	p = startMain(t, cmd, "--socket", filepath.Join(dir, "vm.sock"), "--control", ctl, "--lease-file", "none")
	p.waitUp(ctl)
	require.Contains(t, p.out.String(), "inherited=false")
	require.Equal(t, exitOK, p.stop(syscall.SIGTERM))
}

// Which inherited socket serves which path: by bound address first, then
// by FileDescriptorName (the path, its base name, or "control").
func TestActivationMatch(t *testing.T) {
	dir := shortDir(t)
	mk := func(name, addr string) *inheritedSocket {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, addr), Net: "unix"})
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		return &inheritedSocket{fd: 3, name: name, addr: filepath.Join(dir, addr), ln: l}
	}
	byAddr, byBase, byCtl := mk("x", "a.sock"), mk("vm1.sock", "elsewhere1"), mk("control", "elsewhere2")
	a := &activation{socks: []*inheritedSocket{byCtl, byBase, byAddr}}
	require.Same(t, byAddr.ln, a.take(filepath.Join(dir, "a.sock")))
	require.Same(t, byBase.ln, a.take("/run/vhost-arcnet/vm1.sock"))
	require.Nil(t, a.take("/run/vhost-arcnet/vm2.sock"))
	require.ErrorContains(t, a.unused(), "(name control, "+byCtl.addr+") matches no --socket or --control path")
	require.Same(t, byCtl.ln, a.take("/run/vhost-arcnet/ctl.sock", "control"))
	require.NoError(t, a.unused())
}

// shortDir is a temporary directory with a short path (unix socket paths
// have at most 107 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// SIGHUP reloads the config file while a guest is attached (run() in this
// process, --uplink none): a reservation and a DNS record are added and
// the guest keeps its session and its lease; flags on the command line
// still win over the file; a key that cannot change at run time is
// logged as such; a file with an error changes nothing and is logged with
// its line; a record dropped from the file is removed.
func TestReloadKeepsGuest(t *testing.T) {
	dir := shortDir(t)
	sock, ctl, conf := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "control.sock"), filepath.Join(dir, "vm.toml")
	write := func(text string) { require.NoError(t, os.WriteFile(conf, []byte(text), 0o600)) }
	write(`socket = "` + sock + `"
dns-upstream = "127.0.0.1:9"
reserve = ["52:54:00:00:00:07=192.168.127.7"]
`)
	cfg, err := parseFlags([]string{"--config", conf, "--control", ctl, "--lease-file", "none", "--log-level", "info"}, io.Discard)
	require.NoError(t, err)
	logs, _ := startRun(t, cfg)
	logs.wait(t, "listening") // SIGHUP is caught from here on
	g := attach(t, sock)
	ip := g.ip
	// One line once the guest's rings run, with what it negotiated.
	up := logs.wait(t, "guest port running")
	require.Equal(t, "1", up["queue_pairs"])
	require.NotEmpty(t, up["config_mac"])
	require.Contains(t, strings.Split(up["feature_names"], ","), "VERSION_1")
	require.Equal(t, 1, logs.count("guest port running"), "one line, not one per ring")

	hup := func() map[string]string {
		t.Helper()
		n := logs.count("config reloaded") + logs.count("config reload failed: nothing changed")
		require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
		require.Eventually(t, func() bool {
			return logs.count("config reloaded")+logs.count("config reload failed: nothing changed") > n
		}, 10*time.Second, 5*time.Millisecond)
		return logs.last()
	}
	write(`socket = "` + sock + `"
dns-upstream = "127.0.0.1:9"
reserve = ["52:54:00:00:00:07=192.168.127.7", "52:54:00:00:00:08=192.168.127.8"]
dns-record = ["files=192.168.127.20"]
log-level = "debug"
mtu = 9000
`)
	rec := hup()
	require.Equal(t, "config reloaded", rec["msg"], rec)
	require.Equal(t, "1", rec["reservations_added"])
	require.Equal(t, "1", rec["dns_records_added"])
	require.Equal(t, "info", rec["log_level"], "--log-level on the command line wins over the file")
	require.Equal(t, "0", rec["failed"])
	require.Equal(t, "mtu", logs.find("config reload: these keys changed and take effect at the next start only")["keys"])

	// The guest is still attached, on the same session, with its lease.
	require.Zero(t, logs.count("guest port detached"))
	require.Equal(t, ip, g.dhcp(testGuestMAC, "vm1", ip), "the lease is renewed (INIT-REBOOT is ACKed)")
	rc, a := g.lookup(testGuestMAC, "files.arcnet.internal.")
	require.Equal(t, dns.RcodeSuccess, rc)
	require.Equal(t, "192.168.127.20", a)
	var rs apiReservations
	b, err := newCtlClient(ctl).do("GET", "/v1/reservations", nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rs))
	require.Equal(t, []apiReservation{{MAC: "52:54:00:00:00:07", Address: "192.168.127.7"},
		{MAC: "52:54:00:00:00:08", Address: "192.168.127.8"}}, rs.Reservations)
	var ps apiPorts
	b, err = newCtlClient(ctl).do("GET", "/v1/ports", nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &ps))
	require.Len(t, ps.Ports, 1)
	require.True(t, ps.Ports[0].Active)

	// A bad file: logged with its line, nothing changes.
	write(`socket = "` + sock + `"
dns-upstream = "127.0.0.1:9"
reserve = "52:54:00:00:00:07=nonsense"
`)
	rec = hup()
	require.Equal(t, "config reload failed: nothing changed", rec["msg"])
	require.Contains(t, rec["err"], "vm.toml:3: reserve")
	_, a = g.lookup(testGuestMAC, "files.arcnet.internal.")
	require.Equal(t, "192.168.127.20", a, "the record is still there")

	// The record and a reservation leave the file: they are removed.
	write(`socket = "` + sock + `"
dns-upstream = "127.0.0.1:9"
reserve = ["52:54:00:00:00:07=192.168.127.7"]
`)
	rec = hup()
	require.Equal(t, "config reloaded", rec["msg"], rec)
	require.Equal(t, "1", rec["reservations_removed"])
	require.Equal(t, "1", rec["dns_records_removed"])
	rc, _ = g.lookup(testGuestMAC, "files.arcnet.internal.")
	require.Equal(t, dns.RcodeNameError, rc)
	require.Equal(t, ip, g.dhcp(testGuestMAC, "vm1", ip))
	require.Zero(t, logs.count("guest port detached"))

	g.f.Disconnect()
	require.Equal(t, testGuestMAC.String(), logs.wait(t, "guest port detached")["mac"], "the MAC the guest used")
}

// count returns how many records have message msg.
func (l *logRecords) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}

// last returns the newest record that is a reload's outcome.
func (l *logRecords) last() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.recs) - 1; i >= 0; i-- {
		if m := l.recs[i]["msg"]; m == "config reloaded" || m == "config reload failed: nothing changed" {
			return l.recs[i]
		}
	}
	return nil
}

// find returns the newest record with message msg, nil if none.
func (l *logRecords) find(msg string) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for j := len(l.recs) - 1; j >= 0; j-- {
		if l.recs[j]["msg"] == msg {
			return l.recs[j]
		}
	}
	return nil
}
