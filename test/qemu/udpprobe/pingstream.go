//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// pingStream sends an ICMP echo request (RFC 792) to host every interval
// for dur from a raw socket, and reads the replies until wait after the
// last one. Every time is the guest's own (CLOCK_MONOTONIC through
// time.Now). It prints
//
//	sent=N received=M lost=L dup=D max_gap_ms=G lost_run=R rtt_max_ms=T lost_seqs=S,...
//
// max_gap_ms is the longest time between two replies in a row as the
// guest saw it (the outage during a live migration, plus one interval);
// lost_run the longest run of requests without a reply.
func pingStream(host string, dur, interval, wait time.Duration) error {
	if interval <= 0 || dur < interval {
		return errors.New("-every must be > 0 and at most -for")
	}
	dst, err := net.ResolveIPAddr("ip4", host)
	if err != nil {
		return err
	}
	c, err := net.ListenIP("ip4:icmp", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	n := int(dur / interval)
	sentAt := make([]time.Time, n)
	gotAt := make([]time.Time, n)
	dup := 0
	id := uint16(os.Getpid())
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				done <- nil // the deadline after the last request
				return
			}
			now := time.Now()
			// Echo reply: type 0, code 0, id, seq (RFC 792).
			if k < 8 || buf[0] != 0 || buf[1] != 0 || binary.BigEndian.Uint16(buf[4:]) != id {
				continue
			}
			seq := int(binary.BigEndian.Uint16(buf[6:]))
			if seq >= n {
				continue
			}
			if !gotAt[seq].IsZero() {
				dup++
				continue
			}
			gotAt[seq] = now
		}
	}()
	msg := make([]byte, 16)
	start := time.Now()
	for seq := range n {
		time.Sleep(time.Until(start.Add(time.Duration(seq) * interval)))
		msg[0], msg[1] = 8, 0 // echo request
		binary.BigEndian.PutUint16(msg[2:], 0)
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		binary.BigEndian.PutUint64(msg[8:], uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		sentAt[seq] = time.Now()
		if _, err := c.WriteTo(msg, dst); err != nil {
			// A full TX queue during a switchover: the request is lost.
			fmt.Fprintln(os.Stderr, "arcnet-udp: send", seq, err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	<-done
	received, run, longest := 0, 0, 0
	var maxGap, maxRTT time.Duration
	var last time.Time
	var lost []string
	for seq := range n {
		if gotAt[seq].IsZero() {
			run++
			longest = max(longest, run)
			lost = append(lost, fmt.Sprint(seq))
			continue
		}
		run = 0
		received++
		maxRTT = max(maxRTT, gotAt[seq].Sub(sentAt[seq]))
		if !last.IsZero() {
			maxGap = max(maxGap, gotAt[seq].Sub(last))
		}
		last = gotAt[seq]
	}
	if len(lost) > 20 {
		lost = append(lost[:20], "...")
	}
	if len(lost) == 0 {
		lost = []string{"none"}
	}
	fmt.Printf("sent=%d received=%d lost=%d dup=%d max_gap_ms=%.1f lost_run=%d rtt_max_ms=%.1f lost_seqs=%s\n",
		n, received, n-received, dup, float64(maxGap.Microseconds())/1000, longest,
		float64(maxRTT.Microseconds())/1000, strings.Join(lost, ","))
	if received == 0 {
		return errors.New("no echo reply")
	}
	return nil
}

// icmpChecksum is the Internet checksum (RFC 1071) of b.
func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
