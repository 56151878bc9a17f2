// Package headertest builds and checks the frames of the tests, in the
// spirit of gVisor's pkg/tcpip/checker: a Frame describes Ethernet, ARP,
// IPv4/IPv6 and TCP/UDP/ICMPv4 by their fields and Build writes it with
// every length and checksum filled in (BuildGSO adds the virtio-net header
// a driver would send with it); CheckIPv4 takes a frame apart, verifies
// every checksum and runs small composable checks:
//
//	f := headertest.Frame{Dst: gw, Src: guest,
//		IPv4: &headertest.IPv4Header{Src: a, Dst: b},
//		UDP:  &headertest.UDPHeader{SrcPort: 5353, DstPort: 53},
//		Payload: query}.Build()
//	headertest.CheckIPv4(t, out, headertest.Src(nat), headertest.TTL(63),
//		headertest.UDP(headertest.DstPort(53)))
//
// The checks verify checksums with RefChecksum, a byte-at-a-time RFC 1071
// sum written independently of header.Checksum, so a test does not check
// the code under test against itself. Recorder keeps what a test port is
// handed (datapathtest.Capture is that port for datapath.Port users).
//
// Payloads of DHCP and DNS are built with the libraries the services use
// (insomniacslk/dhcp, miekg/dns), not here.
//
// # Threat model
//
// None: tests only. Builders panic on a spec they cannot write (an IPv6
// address in an IPv4 header), as a test helper may.
//
// # Concurrency
//
// Frames and checks are values with no shared state. A Recorder is safe
// for concurrent use.
package headertest
