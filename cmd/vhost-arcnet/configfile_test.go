package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeConfig writes a config file into a test directory and returns its
// path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vm.toml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

// argsToTOML writes command-line args (--name value, --switch) as a config
// file, one key per line in order; a repeated flag becomes an array on the
// line of its first use. It returns the file and each key's line.
func argsToTOML(t *testing.T, args []string) (string, map[string]int) {
	t.Helper()
	f := newFlags()
	type kv struct {
		key  string
		vals []string
	}
	var keys []*kv
	byKey := map[string]*kv{}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		require.True(t, ok, "arg %q", args[i])
		name, inline, hasInline := strings.Cut(name, "=")
		fl := f.fset.Lookup(name)
		e := byKey[name]
		if e == nil {
			e = &kv{key: name}
			byKey[name] = e
			keys = append(keys, e)
		}
		if hasInline {
			e.vals = append(e.vals, inline)
			continue
		}
		if fl != nil {
			if _, isBool := fl.Value.(*boolScalar); isBool {
				e.vals = append(e.vals, "true")
				continue
			}
		}
		i++
		e.vals = append(e.vals, args[i])
	}
	var b strings.Builder
	lines := map[string]int{}
	for n, e := range keys {
		lines[e.key] = n + 1
		fl := f.fset.Lookup(e.key)
		var kind any = ""
		if fl != nil {
			kind = fl.Value.(option).TOML()
		}
		switch kind.(type) {
		case bool, int64:
			// A value that is not a TOML bool or integer goes in as a
			// string, which the type check refuses.
			v := e.vals[0]
			if _, err := strconv.ParseInt(v, 10, 64); err != nil && v != "true" && v != "false" {
				v = tomlString(v)
			}
			fmt.Fprintf(&b, "%s = %s\n", e.key, v)
		case []string:
			fmt.Fprintf(&b, "%s = %s\n", e.key, tomlLiteral(e.vals))
		default:
			fmt.Fprintf(&b, "%s = %s\n", e.key, tomlString(e.vals[0]))
		}
	}
	return b.String(), lines
}

// Every bad command line of TestParseFlags fails the same way as a config
// file, with the file's name and a line.
func TestConfigFileSameChecksAsFlags(t *testing.T) {
	for _, tc := range badFlagCases {
		if tc.name == "stray arg" {
			continue // a file has no positional arguments
		}
		t.Run(tc.name, func(t *testing.T) {
			text, _ := argsToTOML(t, tc.args)
			p := writeConfig(t, text)
			_, err := parseFlags([]string{"--config", p}, io.Discard)
			require.Error(t, err, "file:\n%s", text)
			msg := strings.TrimPrefix(tc.msg, "--")
			if tc.name == "unknown flag" {
				msg = "unknown key"
			}
			require.Contains(t, err.Error(), msg)
			if tc.name != "nothing" {
				require.Contains(t, err.Error(), "config file "+p+":", "names the file and line")
			}
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		args       []string
		want       string // the whole error after "config file PATH"
	}{
		{"syntax", "socket = [\"a\"]\nmtu = \n", nil, ":2: "},
		{"duplicate key", "socket = [\"a\"]\nmtu = 1\nmtu = 2\n", nil, ":3: "},
		{"unknown key", "socket = [\"a\"]\n\nuplnk = \"tap\"\n", nil, `:3: unknown key "uplnk" (did you mean "uplink"?)`},
		{"unknown key far", "socket = [\"a\"]\nbandwidth = 5\n", nil, `:2: unknown key "bandwidth"`},
		{"unknown key with dots", "socket = [\"a\"]\nmetric.addr = \"x\"\n", nil, `:2: unknown key "metric"`},
		{"unknown table", "socket = [\"a\"]\n[nat]\nmax = 5\n", nil, `:2: unknown key "nat"`},
		{"version", "socket = [\"a\"]\nversion = true\n", nil, `:2: "version" is a command-line flag only`},
		{"config", "config = \"other.toml\"\nsocket = [\"a\"]\n", nil, `:1: "config" is a command-line flag only`},
		{"int as string", "socket = [\"a\"]\nmtu = \"1500\"\n", nil, `:2: mtu string "1500": want an integer`},
		{"int as float", "socket = [\"a\"]\nmtu = 1500.0\n", nil, `:2: mtu float 1500: want an integer`},
		{"bool as string", "socket = [\"a\"]\npoll = \"yes\"\n", nil, `:2: poll string "yes": want true or false`},
		{"string as int", "socket = [\"a\"]\nsocket-mode = 600\n", nil, `:2: socket-mode integer 600: want a string`},
		{"string as table", "socket = [\"a\"]\n[subnet]\nbits = 24\n", nil, `:2: subnet table: want a string`},
		{"list as int", "socket = 5\n", nil, `:1: socket integer 5: want an array of strings`},
		{"list of ints", "socket = [\"a\", 5]\n", nil, `:1: socket integer 5 in the array: want strings`},
		{"bad value", "socket = [\"a\"]\nsubnet = \"10.0.0.0/31\"\n", nil,
			`:2: subnet "10.0.0.0/31": want an IPv4 CIDR from /8 to /30, such as 192.168.127.0/24`},
		{"bad value in list", "socket = [\"a\", \"\"]\n", nil, `:1: socket "": empty path`},
		{"bad int", "socket = [\"a\"]\nqueue-pairs = 17\n", nil, `:2: queue-pairs "17": want 1..16`},
		{"bad metrics", "socket = [\"a\"]\nmetrics = \":9100\"\n", nil, `:2: metrics ":9100": give the address to listen on`},
		{"cross check names the file's key", "socket = [\"a\"]\nuplink = \"tap\"\n\nreserve = [\"52:54:00:00:00:07=10.9.9.9\"]\n", nil,
			`:4: reserve "52:54:00:00:00:07=10.9.9.9": 10.9.9.9 is outside --subnet 192.168.127.0/24`},
		{"cross check with a flag", "forward = [\"tcp:8080:web:80\"]\n", []string{"--socket", "a"},
			`:1: --masquerade and --forward need an uplink that leaves the host: --uplink tap (now none)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.file)
			_, err := parseFlags(append([]string{"--config", p}, tc.args...), io.Discard)
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), "config file "+p+tc.want), "error %q, want %q", err, "config file "+p+tc.want)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := parseFlags([]string{"--config", filepath.Join(t.TempDir(), "nope.toml")}, io.Discard)
		require.ErrorContains(t, err, "--config: open ")
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("empty name", func(t *testing.T) {
		_, err := parseFlags([]string{"--config", ""}, io.Discard)
		require.EqualError(t, err, `--config "": empty path`)
	})
}

func TestConfigFileOverrides(t *testing.T) {
	p := writeConfig(t, `
socket = ["/run/a.sock", "/run/b.sock"]
uplink = "tap"
forward = ["tcp:8080:web:80"]
mtu = 9000
poll = true
dns-upstream = "10.0.0.53"   # a single string is a one-element list
lease-time = "10m"
`)
	c, err := parseFlags([]string{"--config", p}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"/run/a.sock", "/run/b.sock"}, c.sockets)
	require.Equal(t, "tap", c.uplink)
	require.Len(t, c.forwards, 1)
	require.Equal(t, 9000, c.mtu)
	require.True(t, c.poll)
	require.Equal(t, []string{"10.0.0.53"}, c.dnsUpstreams)
	require.Equal(t, "/run/a.sock.leases", c.leaseFile)

	// Flags win; a repeatable flag's values replace the file's list.
	c, err = parseFlags([]string{"--socket", "/run/c.sock", "--mtu", "1400", "--config", p, "--poll=false",
		"--forward", "tcp:2222:web:22", "--forward", "udp:5353:web:53"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"/run/c.sock"}, c.sockets)
	require.Equal(t, 1400, c.mtu)
	require.False(t, c.poll)
	require.Len(t, c.forwards, 2)
	require.Equal(t, uint16(2222), c.forwards[0].HostPort)
	require.Equal(t, "tap", c.uplink, "keys the command line does not give stay")

	// A bad value in the file is still an error when a flag overrides it?
	// No: the file's key is not read at all, as if it were absent.
	p2 := writeConfig(t, "socket = [\"a\"]\nmtu = 1\n")
	_, err = parseFlags([]string{"--config", p2, "--mtu", "1500"}, io.Discard)
	require.NoError(t, err)

	// --version needs neither a socket nor a readable file.
	_, err = parseFlags([]string{"--version", "--config", "/nonexistent"}, io.Discard)
	require.ErrorIs(t, err, errVersion)
}

// The printed configuration parses back to the same configuration and
// prints the same again.
func TestConfigPrintRoundTrip(t *testing.T) {
	cases := [][]string{
		{"--socket", "/tmp/s"},
		{"--socket", "a", "--socket", "b", "--connect", "c", "--uplink", "loopback", "--queue-pairs", "4",
			"--socket-mode", "0660", "--log-format", "json", "--log-level", "debug", "--poll"},
		{"--socket", "a", "--subnet", "10.7.0.9/16", "--domain", "lab.test", "--dns-upstream", "127.0.0.1:5353",
			"--dns-upstream", "::1", "--lease-file", "/tmp/l.json", "--reserve", "52:54:00:00:00:07=10.7.0.7",
			"--lease-time", "10m", "--allow-spoofing", "--metrics", "127.0.0.1:9100", "--dns-record", "db=10.7.0.20",
			"--dns-record", "Files=192.0.2.1"},
		{"--socket", "/s", "--connect", "/c", "--mac", "/s=52:54:00:00:00:10", "--link-speed", "10000",
			"--pcap", "/tmp/x \"quoted\"\t.pcap", "--cpuprofile", "cpu.out"},
		{"--socket", "a", "--uplink", "tap:arc0", "--masquerade", "--forward", "tcp:8080:web:80",
			"--forward", "udp:0.0.0.0:5353:192.168.127.9:53", "--uplink-net", "10.99.0.0/30",
			"--nat-max-flows", "1024", "--nat-max-flows-per-guest", "100", "--lease-file", "none"},
		{"--connect", "x", "--uplink", "source", "--source-size", "1518", "--mtu", "9000"},
	}
	for i, args := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			want, f, err := parseConfig(args, io.Discard, false)
			require.NoError(t, err)
			var printed bytes.Buffer
			require.NoError(t, f.print(&printed))
			p := writeConfig(t, printed.String())
			got, f2, err := parseConfig([]string{"--config", p}, io.Discard, false)
			require.NoError(t, err, "printed:\n%s", printed.String())
			// What each was made from (for a reload) differs, of course.
			want.args, want.flags, got.args, got.flags = nil, nil, nil, nil
			require.Equal(t, want, got)
			var again bytes.Buffer
			require.NoError(t, f2.print(&again))
			require.Equal(t, printed.String(), again.String())
		})
	}
}

func TestConfigCommand(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, configCommand([]string{"print"}, &out, &errb), errb.String())
	// Every flag a file may set is printed once, as a key.
	f := newFlags()
	n := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, _, ok := strings.Cut(line, " = ")
		require.True(t, ok, "line %q", line)
		require.NotNil(t, f.fset.Lookup(key), "key %q", key)
		require.False(t, commandLineOnly[key], key)
		n++
	}
	require.Equal(t, countFlags(f)-len(commandLineOnly), n)
	require.Contains(t, out.String(), "\nmtu = 1500\n")
	require.Contains(t, out.String(), "# default: 1500\n")

	p := writeConfig(t, "socket = [\"/run/vm.sock\"]\nmtu = 9000\n")
	out.Reset()
	require.Equal(t, 0, configCommand([]string{"print", "--config", p, "--queue-pairs", "2"}, &out, &errb))
	require.Contains(t, out.String(), "\nsocket = [\"/run/vm.sock\"]\n")
	require.Contains(t, out.String(), "\nmtu = 9000\n")
	require.Contains(t, out.String(), "\nqueue-pairs = 2\n")

	errb.Reset()
	require.Equal(t, 2, configCommand([]string{"print", "--mtu", "1"}, &out, &errb))
	require.Contains(t, errb.String(), `--mtu "1": want 68..65535`)
	require.Equal(t, 2, configCommand(nil, &out, &errb))
	require.Equal(t, 2, configCommand([]string{"show"}, &out, &errb))
	require.Equal(t, 0, configCommand([]string{"print", "-h"}, &out, &errb))
}

func countFlags(f *flags) int {
	n := 0
	f.fset.VisitAll(func(*flag.Flag) { n++ })
	return n
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"uplnk", "uplink", 1}, {"mtu", "mut", 2}, {"socket", "sockets", 1}, {"", "abc", 3}} {
		require.Equal(t, tc.d, editDistance(tc.a, tc.b), "%q %q", tc.a, tc.b)
	}
}

// The README's command line lists every flag (the flag definitions are
// the reference; the README must not fall behind them).
func TestREADMEListsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, block, ok := strings.Cut(string(b), "## Command line\n")
	require.True(t, ok)
	block, _, _ = strings.Cut(block, "\n## ")
	newFlags().fset.VisitAll(func(fl *flag.Flag) {
		require.Regexp(t, `\n\s+--`+regexp.QuoteMeta(fl.Name)+`[ \n]`, block, "README's command line lacks --%s", fl.Name)
	})
}
