//go:build linux

// Command arcnet-udp is the test guest's UDP tool (busybox's nc has no UDP
// mode): a client that sends datagrams to an echo server and checks that
// each comes back unchanged, and an echo server. It is built for
// linux/amd64 with CGO_ENABLED=0 and put into the guest's initramfs by the
// test/qemu harness.
//
// Usage:
//
//	arcnet-udp -c HOST:PORT [-n COUNT] [-size BYTES] [-w TIMEOUT] [-tries N]
//	arcnet-udp -l PORT
//	arcnet-udp -ping HOST [-for DURATION] [-every INTERVAL]
//
// The client prints "sent=N received=M bytes=B rtt_ms=R from=ADDR:PORT" and
// exits 1 unless every datagram's echo came back (each datagram is sent up
// to -tries times). The server echoes every datagram to its sender until it
// is killed.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "arcnet-udp:", err)
		os.Exit(1)
	}
}

func run() error {
	client := flag.String("c", "", "send to this echo server `HOST:PORT`")
	listen := flag.Int("l", 0, "serve as an echo server on this UDP `PORT`")
	count := flag.Int("n", 3, "datagrams to send")
	size := flag.Int("size", 64, "datagram payload `BYTES` (>= 16)")
	wait := flag.Duration("w", 2*time.Second, "how long to wait for each echo")
	tries := flag.Int("tries", 3, "sends of one datagram before it counts as lost")
	ping := flag.String("ping", "", "send ICMP echo requests to `HOST` (pingstream.go)")
	dur := flag.Duration("for", 10*time.Second, "how long -ping sends")
	every := flag.Duration("every", 10*time.Millisecond, "interval of -ping's requests")
	flag.Parse()
	switch {
	case *ping != "":
		return pingStream(*ping, *dur, *every, *wait)
	case *listen > 0 && *client == "":
		return serve(*listen)
	case *client != "" && *listen == 0:
		if *size < 16 || *size > 65000 {
			return fmt.Errorf("-size %d: want 16..65000", *size)
		}
		return probe(*client, *count, *size, *tries, *wait)
	default:
		return errors.New("give -c HOST:PORT or -l PORT")
	}
}

func serve(port int) error {
	pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	fmt.Printf("listening=%s\n", pc.LocalAddr())
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			fmt.Fprintln(os.Stderr, "arcnet-udp: echo to", from, err)
		}
	}
}

func probe(addr string, count, size, tries int, wait time.Duration) error {
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return err
	}
	conn, err := net.DialUDP("udp4", nil, raddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := make([]byte, size)
	buf := make([]byte, 65536)
	sent, received, total := 0, 0, 0
	var rtt time.Duration
	var from net.Addr
	for seq := range count {
		// A payload unique to this datagram: sequence number, then a
		// deterministic pattern.
		copy(msg, fmt.Sprintf("arcnet-udp %5d ", seq))
		for i := 16; i < size; i++ {
			msg[i] = byte(seq*31 + i*7)
		}
		ok := false
		for try := 0; try < tries && !ok; try++ {
			t0 := time.Now()
			if _, err := conn.Write(msg); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			sent++
			_ = conn.SetReadDeadline(t0.Add(wait))
			for {
				n, err := conn.Read(buf)
				if err != nil {
					break // timeout (or ICMP unreachable): send again
				}
				if bytes.Equal(buf[:n], msg) {
					ok = true
					received++
					total += n
					rtt += time.Since(t0)
					from = conn.RemoteAddr()
					break
				}
				// An echo of an earlier try of another datagram: skip.
			}
		}
	}
	ms := 0.0
	if received > 0 {
		ms = float64(rtt.Microseconds()) / 1000 / float64(received)
	}
	fmt.Printf("sent=%d received=%d bytes=%d rtt_ms=%.3f from=%v\n", sent, received, total, ms, from)
	if received < count {
		return fmt.Errorf("%d of %d datagrams not echoed", count-received, count)
	}
	return nil
}
