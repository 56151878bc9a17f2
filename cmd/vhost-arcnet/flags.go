package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/arcnet/vhost-arcnet/hostif/xdp"
	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// config is the parsed command line and config file (the contract in the
// README).
type config struct {
	sockets     []string
	socketMode  fs.FileMode
	socketGroup string // --socket-group as given ("": the process's group)
	socketGID   int    // its gid; -1 for none
	connects    []string
	streams     []frameSockAddr // --listen-stream
	dgrams      []string        // --listen-dgram
	uplink      string
	sourceSize  int
	queuePairs  int
	rxBacklog   int // bytes
	mtu         int
	poll        bool
	packed      bool
	logLevel    slog.Level
	logJSON     bool
	cpuProfile  string
	macs        map[string][6]byte
	linkSpeed   uint

	// The guest network (--uplink none): switch, gateway services.
	subnet        netip.Prefix
	domain        string
	dnsUpstreams  []string
	leaseFile     string
	natStateFile  string // --nat-state-file: "" memory only
	leaseTime     time.Duration
	reservations  []services.Reservation
	dnsRecords    []dnsRecord // --dns-record
	allowSpoofing bool

	// The TAP uplink (--uplink tap[:NAME]): NAT, masquerade, forwards.
	tapName string // --uplink tap:NAME: an existing TAP
	// The vmnet uplink (--uplink vmnet[:MODE]): vmnet-helper's mode, the
	// host interface of bridged mode, the helper (--vmnet-helper).
	vmnetMode, vmnetIface, vmnetHelper string
	uplinkNet                          netip.Prefix
	masquerade                         bool
	forwards                           []hostif.ForwardSpec
	natMaxFlows                        int
	maxMemory                          uint64 // --max-memory-gib, in bytes
	natGuestMax                        int

	// The XDP uplink (--uplink xdp:IFACE).
	xdpIface string
	xdpPorts portRange // --xdp-ports

	pcapFile    string // --pcap
	metricsAddr string // --metrics
	controlPath string // --control

	// What it was made from, for a reload (SIGHUP): the command line
	// (without the program name) and the flags with their values.
	args  []string
	flags *flags
}

// dnsRecord is one --dns-record NAME=ADDR: an A record NAME.<domain>.
type dnsRecord struct {
	name string // one label, lower case
	addr netip.Addr
}

func (r dnsRecord) String() string { return r.name + "=" + r.addr.String() }

// routed reports whether the guest network has an uplink (NAT and router).
func (c *config) routed() bool { return c.uplink == "tap" || c.uplink == "xdp" || c.uplink == "vmnet" }

// guestNetwork reports whether guests are attached to the switch (rather
// than to a measurement uplink).
func (c *config) guestNetwork() bool { return c.uplink == "none" || c.routed() }

// errVersion is parseFlags' answer to --version: print the version, exit 0.
var errVersion = errors.New("version requested")

// uplinkKinds are the --uplink values this build implements.
var uplinkKinds = []string{"none", "tap", "tap:NAME", "xdp:IFACE", "vmnet", "vmnet:shared", "vmnet:host",
	"vmnet:bridged:IFACE", "sink", "sink-copy", "source", "loopback"}

// plannedUplinks are documented uplinks that this build does not have yet.
var plannedUplinks = []string{}

// commandLineOnly are the flags a config file cannot set.
var commandLineOnly = map[string]bool{"config": true, "version": true}

// flags are the flags of the command line and, under the same names, the
// keys of the config file. Each value checks itself in Set, whichever of
// the two it comes from; build checks the values against each other. The
// flag definitions are the one place where defaults are written down (-h,
// config print and the README's command line show them).
type flags struct {
	fset   *flag.FlagSet
	failed *setFailure       // the last value a Set refused
	origin map[string]string // key -> "config file F:L" for values the config file set

	config  *scalar[string]
	version *boolScalar

	sockets, connects        *list[string]
	streams                  *list[frameSockAddr]
	dgrams                   *list[string]
	socketMode               *scalar[fs.FileMode]
	socketGroup              *scalar[string]
	uplink                   *scalar[string]
	sourceSize, queuePairs   *scalar[int]
	rxBacklog                *scalar[int]
	mtu, linkSpeed           *scalar[int]
	poll                     *boolScalar
	packedRings              *boolScalar
	subnet, uplinkNet        *scalar[netip.Prefix]
	domain, leaseFile        *scalar[string]
	natStateFile             *scalar[string]
	upstreams                *list[string]
	leaseTime                *scalar[time.Duration]
	reserve                  *list[services.Reservation]
	records                  *list[dnsRecord]
	masquerade               *boolScalar
	forwards                 *list[hostif.ForwardSpec]
	natMaxFlows, natGuestMax *scalar[int]
	xdpPorts                 *scalar[portRange]
	maxMemGiB                *scalar[int]
	allowSpoofing            *boolScalar
	macs                     *list[portMAC]
	pcap, cpuProfile         *scalar[string]
	vmnetHelper              *scalar[string]
	metrics, control         *scalar[string]
	logLevel                 *scalar[slog.Level]
	logFormat                *scalar[string]
}

// portMAC is one --mac PATH=MAC.
type portMAC struct {
	path string
	mac  [6]byte
}

func addScalar[T any](f *flags, name string, def T, usage string, parse func(string) (T, error), format func(T) string) *scalar[T] {
	s := &scalar[T]{name: name, failed: &f.failed, v: def, parse: parse, format: format}
	f.fset.Var(s, name, usage)
	return s
}

func addString(f *flags, name, def, usage string, parse func(string) (string, error)) *scalar[string] {
	return addScalar(f, name, def, usage, parse, func(s string) string { return s })
}

func addInt(f *flags, name string, def, lo, hi int, usage string) *scalar[int] {
	return addScalar(f, name, def, usage, intIn(lo, hi), formatInt)
}

func addBool(f *flags, name, usage string) *boolScalar {
	b := &boolScalar{scalar[bool]{name: name, failed: &f.failed, parse: parseBool, format: strconv.FormatBool}}
	f.fset.Var(b, name, usage)
	return b
}

func addList[T any](f *flags, name, usage string, parse func(string) (T, error)) *list[T] {
	l := &list[T]{name: name, failed: &f.failed, parse: parse}
	f.fset.Var(l, name, usage)
	return l
}

// newFlags defines every flag with its default, its check and its help.
func newFlags() *flags {
	f := &flags{fset: flag.NewFlagSet("vhost-arcnet", flag.ContinueOnError), origin: map[string]string{}}
	f.config = addString(f, "config", "", "read flags from this TOML `FILE` (keys are the flag names; flags given here override it)", nonEmpty)
	f.version = addBool(f, "version", "print the version (module version, VCS revision, Go version) and exit")
	f.sockets = addList(f, "socket", "listen for vhost-user frontends on this unix socket `PATH` (repeatable)", nonEmpty)
	f.connects = addList(f, "connect", "connect to a frontend's vhost-user server socket `PATH`, reconnecting on loss (repeatable)", nonEmpty)
	f.streams = addList(f, "listen-stream", "listen for frame-socket guests on this unix socket `PATH` or TCP HOST:PORT: each frame preceded by its 32-bit big-endian length (QEMU -netdev stream/socket, krunkit type=unixstream); each connection is one guest port (repeatable)", parseStreamAddr)
	f.dgrams = addList(f, "listen-dgram", "listen for frame-socket guests on this unix datagram socket `PATH`: one frame per datagram (QEMU -netdev dgram, vfkit, krunkit type=unixgram); each peer address is one guest port (repeatable)", nonEmpty)
	f.socketMode = addScalar(f, "socket-mode", fs.FileMode(0o600), "file `MODE` (octal) of listening sockets", parseMode,
		func(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m)) })
	f.socketGroup = addString(f, "socket-group", "", "`GROUP` (name or numeric gid) given to the sockets vhost-arcnet makes (--socket, --control; socket-activated ones are left alone): with --socket-mode 0660 its members may connect to the --socket sockets; the control socket stays 0600 (empty: the process's group)", parseGroup)
	f.uplink = addString(f, "uplink", "none", "uplink `KIND`: "+strings.Join(uplinkKinds, " | "), checkUplink)
	f.sourceSize = addInt(f, "source-size", 64, 60, 65535, "frame size in `BYTES` generated by --uplink source (60..65535)")
	f.queuePairs = addInt(f, "queue-pairs", 1, 1, 16, "queue pairs offered with VIRTIO_NET_F_MQ (1..16)")
	f.rxBacklog = addInt(f, "rx-backlog", 2048, 0, 65536, "`KiB` of frames a guest port holds while the guest's receive ring is full, written as it adds buffers, split between its queue pairs (0..65536; 0 drops them at once); the measurement uplinks (sink, sink-copy, source, loopback) hold none")
	f.mtu = addInt(f, "mtu", 1500, 68, 65535, "MTU offered with VIRTIO_NET_F_MTU (68..65535)")
	f.poll = addBool(f, "poll", "busy-poll the virtqueues instead of sleeping on kicks (benchmarks)")
	f.packedRings = addBool(f, "packed-rings", "also offer packed virtqueues (VIRTIO_F_RING_PACKED); off by default: slower than split rings here (README Performance)")
	f.subnet = addScalar(f, "subnet", services.DefaultSubnet, "guest `CIDR`; the gateway is its first address",
		prefixParser(services.DefaultSubnet), netip.Prefix.String)
	f.domain = addString(f, "domain", services.DefaultDomain, "DNS domain `NAME` of the guests", checkDomain)
	f.upstreams = addList(f, "dns-upstream", "upstream resolver `ADDR[:PORT]` (repeatable); default: the host's /etc/resolv.conf", checkUpstream)
	f.leaseFile = addString(f, "lease-file", "", "keep DHCP leases in this `FILE` across restarts (default: the first --socket or --connect path + \".leases\"; \"none\": memory only)", parseString)
	f.natStateFile = addString(f, "nat-state-file", "", "keep the NAT flows in this `FILE` across restarts, so connections in flight survive them (default: the first --socket or --connect path + \".natflows\"; \"none\": memory only)", parseString)
	f.leaseTime = addScalar(f, "lease-time", services.DefaultLeaseTime, "DHCP lease `DURATION` (at least 1m)", parseLeaseTime, time.Duration.String)
	f.reserve = addList(f, "reserve", "static DHCP lease `MAC=ADDR` (repeatable)", services.ParseReservation)
	f.records = addList(f, "dns-record", "DNS A record `NAME=ADDR` answered by the gateway as NAME.<domain> (repeatable)", parseDNSRecord)
	f.uplinkNet = addScalar(f, "uplink-net", hostif.DefaultLinkNet, "`CIDR` of the link network between the host and vhost-arcnet (--uplink tap): the host's end is its first address, vhost-arcnet's NAT address the second",
		prefixParser(hostif.DefaultLinkNet), netip.Prefix.String)
	f.masquerade = addBool(f, "masquerade", "masquerade the link network out of the host's default route (nftables table vhost_arcnet, net.ipv4.ip_forward=1; removed at exit)")
	f.forwards = addList(f, "forward", "port forward `"+hostif.ForwardSyntax+"` (repeatable): a host client connecting to HOSTADDR:HOSTPORT (default 127.0.0.1) reaches GUEST (address or DHCP host name) on GUESTPORT", hostif.ParseForward)
	f.vmnetHelper = addString(f, "vmnet-helper", "", "the vmnet-helper `PROGRAM` of --uplink vmnet (default: where vmnet-helper installs itself, then PATH; macOS)", parseString)
	f.xdpPorts = addScalar(f, "xdp-ports", portRange{xdp.DefaultPortMin, xdp.DefaultPortMax}, "NAT port range `LO-HI` on the NIC's own address (--uplink xdp): reserved on the host (net.ipv4.ip_local_reserved_ports) while vhost-arcnet runs",
		parsePortRange, portRange.String)
	f.natMaxFlows = addInt(f, "nat-max-flows", 65536, 16, 1<<24, "NAT connection-tracking table size in `FLOWS`")
	f.natGuestMax = addInt(f, "nat-max-flows-per-guest", 0, 0, 1<<24, "each guest's share of the NAT table in `FLOWS` (0: a quarter of --nat-max-flows)")
	f.maxMemGiB = addInt(f, "max-memory-gib", vhostuser.DefaultMaxMemory>>30, 1, 128<<10, "guest memory in `GIB` all vhost-user sessions together may map; a SET_MEM_TABLE or ADD_MEM_REG beyond it is refused and the session keeps what it had")
	f.allowSpoofing = addBool(f, "allow-spoofing", "let guests send from any MAC/IPv4 source (guests that route)")
	f.macs = addList(f, "mac", "MAC address `PATH=MAC` of the guest ports of a --socket/--connect path (repeatable); guest k gets MAC+k; default: 02:... derived from the path", parsePortMAC)
	f.linkSpeed = addInt(f, "link-speed", 0, 0, 1<<31, "link speed in `MBPS` reported in the virtio-net config space (0: unknown)")
	f.pcap = addString(f, "pcap", "", "write every frame the switch forwards to this pcap `FILE` (tcpdump -r, Wireshark)", parseString)
	f.cpuProfile = addString(f, "cpuprofile", "", "write a Go CPU profile to `FILE` until exit (performance work)", parseString)
	f.metrics = addString(f, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. 127.0.0.1:9100 (no authentication: anyone who can reach ADDR can read them; empty: off)", checkMetricsAddr)
	f.control = addString(f, "control", "", "serve the control API (HTTP+JSON, vhost-arcnet ctl) on this unix socket `PATH`, mode 0600 (no authentication beyond the socket's mode; empty: off)", parseString)
	f.logLevel = addScalar(f, "log-level", slog.LevelInfo, "log `LEVEL`: debug | info | warn | error", parseLevel,
		func(l slog.Level) string { return strings.ToLower(l.String()) })
	f.logFormat = addString(f, "log-format", "text", "log `FORMAT`: text | json", func(s string) (string, error) {
		if s != "text" && s != "json" {
			return "", errors.New("want text or json")
		}
		return s, nil
	})
	f.fset.Usage = func() {
		w := f.fset.Output()
		fmt.Fprintf(w, "Usage:\n  vhost-arcnet [--config FILE] [flags]\n  vhost-arcnet config print [--config FILE] [flags]\n  vhost-arcnet ctl [--control PATH] [--json] COMMAND (vhost-arcnet ctl -h)\n\nFlags (config file keys without the dashes):\n")
		f.fset.PrintDefaults()
	}
	return f
}

// parseFlags parses args (without the program name) and the config file
// they name. Errors name the flag, or the config file's key and line, and
// say what is accepted.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c, _, err := parseConfig(args, stderr, false)
	return c, err
}

// parseConfig is parseFlags; for config print (template) a configuration
// without a socket is not an error.
func parseConfig(args []string, stderr io.Writer, template bool) (*config, *flags, error) {
	f := newFlags()
	if err := f.parse(args, stderr); err != nil {
		return nil, nil, err
	}
	if f.version.v {
		return nil, nil, errVersion
	}
	if path := f.config.v; path != "" {
		given := map[string]bool{}
		f.fset.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
		if err := f.readFile(path, given); err != nil {
			return nil, nil, err
		}
	}
	c, err := f.build(template)
	if err != nil {
		return nil, nil, err
	}
	c.args, c.flags = args, f
	return c, f, nil
}

// parse parses the command line. The flag package's own report (with the
// whole usage after it) is replaced by one line naming the flag.
func (f *flags) parse(args []string, stderr io.Writer) error {
	f.fset.SetOutput(io.Discard)
	err := f.fset.Parse(args)
	f.fset.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		f.fset.Usage()
		return err
	case err != nil && f.failed != nil:
		return fmt.Errorf("--%s %q: %w", f.failed.name, f.failed.value, f.failed.err)
	case err != nil:
		return fmt.Errorf("%w (vhost-arcnet -h lists the flags)", err)
	case f.fset.NArg() > 0:
		return fmt.Errorf("unexpected argument %q (all options are flags)", f.fset.Arg(0))
	}
	return nil
}

// at returns where key's value came from as an error prefix: "config file
// F:L: " for a value the config file set, "" otherwise.
func (f *flags) at(key string) string {
	if o := f.origin[key]; o != "" {
		return o + ": "
	}
	return ""
}

// errf returns an error about key's value, named as where it came from:
// "--forward ..." or "config file vm.toml:3: forward ...".
func (f *flags) errf(key, format string, args ...any) error {
	name := "--" + key
	if o := f.origin[key]; o != "" {
		name = o + ": " + key
	}
	return fmt.Errorf(name+" "+format, args...)
}

// build checks the values against each other and makes the config.
func (f *flags) build(template bool) (*config, error) {
	c := &config{
		sockets: f.sockets.vals, connects: f.connects.vals, socketMode: f.socketMode.v,
		streams: f.streams.vals, dgrams: f.dgrams.vals,
		socketGroup: f.socketGroup.v, socketGID: -1,
		uplink: f.uplink.v, sourceSize: f.sourceSize.v, queuePairs: f.queuePairs.v, mtu: f.mtu.v,
		rxBacklog: f.rxBacklog.v << 10,
		poll:      f.poll.v, packed: f.packedRings.v, logLevel: f.logLevel.v, logJSON: f.logFormat.v == "json", cpuProfile: f.cpuProfile.v,
		linkSpeed: uint(f.linkSpeed.v),
		subnet:    f.subnet.v, domain: f.domain.v, dnsUpstreams: f.upstreams.vals, leaseFile: f.leaseFile.v,
		natStateFile: f.natStateFile.v,
		leaseTime:    f.leaseTime.v, reservations: f.reserve.vals, dnsRecords: f.records.vals, allowSpoofing: f.allowSpoofing.v,
		uplinkNet: f.uplinkNet.v, masquerade: f.masquerade.v, forwards: f.forwards.vals,
		natMaxFlows: f.natMaxFlows.v, natGuestMax: f.natGuestMax.v, maxMemory: uint64(f.maxMemGiB.v) << 30,
		pcapFile: f.pcap.v, metricsAddr: f.metrics.v, controlPath: f.control.v,
		xdpPorts: f.xdpPorts.v, vmnetHelper: f.vmnetHelper.v,
	}
	if c.socketGroup != "" {
		gid, err := vhostuser.LookupGroup(c.socketGroup)
		if err != nil {
			return nil, f.errf("socket-group", "%q: %v", c.socketGroup, err)
		}
		c.socketGID = gid
	}
	paths := append(append([]string{}, c.sockets...), c.connects...)
	if err := c.checkFrameSockets(f); err != nil {
		return nil, err
	}
	if len(paths)+len(c.streams)+len(c.dgrams) == 0 && !template {
		return nil, errors.New("nothing to serve: give at least one --socket PATH, --connect PATH, --listen-stream PATH|ADDR or --listen-dgram PATH")
	}
	// Leases survive a restart by default (a guest keeps its address and
	// its forwards keep pointing at it), and NAT flows too (natstate.go):
	// next to the first socket, a directory vhost-arcnet can write to and
	// that belongs to this instance.
	c.leaseFile = c.stateFile(c.leaseFile, paths, ".leases")
	c.natStateFile = c.stateFile(c.natStateFile, paths, ".natflows")
	if name, ok := strings.CutPrefix(c.uplink, "tap:"); ok {
		c.uplink, c.tapName = "tap", name
	}
	if name, ok := strings.CutPrefix(c.uplink, "xdp:"); ok {
		c.uplink, c.xdpIface = "xdp", name
	}
	if c.uplink == "vmnet" || strings.HasPrefix(c.uplink, "vmnet:") {
		c.vmnetMode, c.vmnetIface = parseVMNetMode(c.uplink)
		c.uplink = "vmnet"
	}
	if c.masquerade && c.uplink == "vmnet" {
		return nil, fmt.Errorf("%s--masquerade is for --uplink tap (vmnet NATs by itself in shared mode)", f.at("masquerade"))
	}
	if c.vmnetHelper != "" && c.uplink != "vmnet" {
		return nil, f.errf("vmnet-helper", "is for --uplink vmnet (now %s)", c.uplink)
	}
	// The XDP uplink's NAT address is the host's own: a forward relayed to
	// it would stay inside the host (loopback), never reach the NAT. The
	// vmnet uplink's is on vmnet's network, which the Mac reaches.
	if c.uplink != "tap" && (c.masquerade || (len(c.forwards) > 0 && c.uplink != "vmnet")) {
		key := "forward"
		if c.masquerade {
			key = "masquerade"
		}
		return nil, fmt.Errorf("%s--masquerade and --forward need an uplink that leaves the host: --uplink tap (now %s)", f.at(key), c.uplink)
	}
	if c.pcapFile != "" && !c.guestNetwork() {
		return nil, f.errf("pcap", "captures the switch, which --uplink %s bypasses: use --uplink none or tap", c.uplink)
	}
	if len(c.dnsRecords) > 0 && !c.guestNetwork() {
		return nil, f.errf("dns-record", "needs the guest network's DNS, which --uplink %s bypasses: use --uplink none or tap", c.uplink)
	}
	if c.natGuestMax > c.natMaxFlows {
		return nil, f.errf("nat-max-flows-per-guest", "%d: want 0..--nat-max-flows (%d)", c.natGuestMax, c.natMaxFlows)
	}
	if c.uplink == "tap" && c.subnet.Overlaps(c.uplinkNet) {
		return nil, f.errf("uplink-net", "%v overlaps --subnet %v: choose another link network", c.uplinkNet, c.subnet)
	}
	seen := map[string]string{}
	for _, fw := range c.forwards {
		k := fw.Proto + " " + fw.HostAddrPort().String()
		if prev, dup := seen[k]; dup {
			return nil, f.errf("forward", "%q and %q listen on the same %s port", prev, fw.String(), fw.Proto)
		}
		seen[k] = fw.String()
	}
	for i, r := range c.reservations {
		if !c.subnet.Contains(r.Addr) {
			return nil, f.errf("reserve", "%q: %v is outside --subnet %v", f.reserve.raw[i], r.Addr, c.subnet)
		}
	}
	known := map[string]bool{}
	for _, p := range paths {
		known[p] = true
	}
	for i, m := range f.macs.vals {
		if !known[m.path] {
			return nil, f.errf("mac", "%q: %s is not a --socket or --connect path", f.macs.raw[i], m.path)
		}
		if c.macs == nil {
			c.macs = map[string][6]byte{}
		}
		c.macs[m.path] = m.mac
	}
	return c, nil
}

// The checks of single values, used by Set: their errors say what is
// accepted; Set's caller names the flag or key.

func parseMode(s string) (fs.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, errors.New("want an octal file mode such as 0600")
	}
	return fs.FileMode(m), nil
}

// parseGroup checks a --socket-group: a group name this host knows or a
// numeric gid.
func parseGroup(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if _, err := vhostuser.LookupGroup(s); err != nil {
		return "", errors.New("want a group name known to this host or a numeric gid")
	}
	return s, nil
}

// prefixParser parses an IPv4 CIDR from /8 to /30 (example in errors).
func prefixParser(example netip.Prefix) func(string) (netip.Prefix, error) {
	return func(s string) (netip.Prefix, error) {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
			return netip.Prefix{}, fmt.Errorf("want an IPv4 CIDR from /8 to /30, such as %v", example)
		}
		return p.Masked(), nil
	}
}

func checkDomain(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, " /") {
		return "", errors.New("want a DNS name such as arcnet.internal")
	}
	return s, nil
}

func parseLeaseTime(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("want a duration such as 1h or 30m")
	}
	if d < time.Minute {
		return 0, errors.New("want at least 1m")
	}
	return d, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, errors.New("want debug, info, warn or error")
	}
	return l, nil
}

// parseDNSRecord parses --dns-record NAME=ADDR: NAME one label (the
// guests' domain is added), ADDR a unicast IPv4 address.
func parseDNSRecord(v string) (dnsRecord, error) {
	name, addr, ok := strings.Cut(v, "=")
	if !ok {
		return dnsRecord{}, errors.New("want NAME=ADDR such as db=192.168.127.20")
	}
	n := strings.ToLower(name)
	if n == "" || len(n) > 63 || n[0] == '-' || n[len(n)-1] == '-' || strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return dnsRecord{}, fmt.Errorf("name %q: want one label of letters, digits and '-' such as db (the guests' domain is added)", name)
	}
	if n == "gateway" || n == "host" {
		return dnsRecord{}, fmt.Errorf("name %q is the gateway's own", name)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return dnsRecord{}, errors.New("want NAME=ADDR with a unicast IPv4 address such as 192.168.127.20")
	}
	return dnsRecord{n, a}, nil
}

// parsePortMAC parses --mac PATH=MAC; whether PATH is a --socket or
// --connect path is build's check.
func parsePortMAC(v string) (portMAC, error) {
	path, addr, ok := strings.Cut(v, "=")
	if !ok || path == "" {
		return portMAC{}, errors.New("want PATH=MAC")
	}
	hw, err := net.ParseMAC(addr)
	if err != nil || len(hw) != 6 {
		return portMAC{}, errors.New("want a 48-bit MAC such as 52:54:00:12:34:56")
	}
	if hw[0]&1 != 0 {
		return portMAC{}, errors.New("a guest needs a unicast MAC (first octet even)")
	}
	return portMAC{path, [6]byte(hw)}, nil
}

// checkUpstream accepts ADDR or ADDR:PORT with an IP address.
func checkUpstream(u string) (string, error) {
	if _, err := netip.ParseAddr(u); err == nil {
		return u, nil
	}
	if _, err := netip.ParseAddrPort(u); err == nil {
		return u, nil
	}
	return "", errors.New("want an IP address, optionally with :PORT")
}

// checkMetricsAddr accepts HOST:PORT where HOST is an IP address or
// localhost. An empty HOST (":9100", every interface) is refused: the
// endpoint has no authentication, so listening beyond the host must be
// asked for by its address (0.0.0.0:9100). "" is off.
func checkMetricsAddr(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want HOST:PORT such as 127.0.0.1:9100")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", errors.New("want HOST:PORT with a port number, such as 127.0.0.1:9100")
	}
	if host == "" {
		return "", errors.New("give the address to listen on, such as 127.0.0.1:9100 (0.0.0.0:9100 for every interface: the metrics have no authentication)")
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
		return "", errors.New("want an IP address or localhost, such as 127.0.0.1:9100")
	}
	return s, nil
}

// parseVMNetMode splits a checked --uplink vmnet[:MODE] into the mode
// (shared by default) and the bridged interface.
func parseVMNetMode(kind string) (mode, iface string) {
	rest, _ := strings.CutPrefix(kind, "vmnet")
	rest = strings.TrimPrefix(rest, ":")
	if rest == "" {
		return hostif.VMNetShared, ""
	}
	mode, iface, _ = strings.Cut(rest, ":")
	return mode, iface
}

func checkUplink(kind string) (string, error) {
	for _, k := range uplinkKinds {
		if kind == k && k != "tap:NAME" && k != "vmnet:bridged:IFACE" {
			return kind, nil
		}
	}
	for _, k := range []string{"tap", "xdp"} {
		if name, ok := strings.CutPrefix(kind, k+":"); ok {
			if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t:%") {
				return "", fmt.Errorf("want %s:NAME with an interface name of 1..15 characters", k)
			}
			return kind, nil
		}
	}
	if kind == "xdp" {
		return "", errors.New("want xdp:IFACE, the host NIC to attach to")
	}
	if name, ok := strings.CutPrefix(kind, "vmnet:bridged:"); ok {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t:%") {
			return "", errors.New("want vmnet:bridged:IFACE with a host interface name of 1..15 characters (vmnet-helper --list-shared-interfaces)")
		}
		return kind, nil
	}
	if kind == "vmnet:bridged" {
		return "", errors.New("bridged mode needs the host interface: vmnet:bridged:IFACE (vmnet-helper --list-shared-interfaces)")
	}
	name, _, _ := strings.Cut(kind, ":")
	for _, k := range plannedUplinks {
		if name == k {
			return "", fmt.Errorf("the %s uplink is not in this build yet; available: %s",
				k, strings.Join(uplinkKinds, ", "))
		}
	}
	return "", fmt.Errorf("unknown kind; available: %s", strings.Join(uplinkKinds, ", "))
}

// stateFile is the path of a state file given as flag value v: "none" is
// no file, "" the first socket's path (vhost-user, else a unix frame
// socket) with suffix, or no file when there is none.
func (c *config) stateFile(v string, paths []string, suffix string) string {
	switch {
	case v == "none":
		return ""
	case v != "":
		return v
	case len(paths) > 0:
		return paths[0] + suffix
	case c.firstFrameSocketPath() != "":
		return c.firstFrameSocketPath() + suffix
	}
	return ""
}
