package nat

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcpTrack moves a TCP flow through its states on a packet with flags fl in
// direction d (0 = the initiator's), and sets its deadline. It is a
// simplified nf_conntrack_proto_tcp without sequence-number checks: good
// enough to pick timeouts, not a firewall.
func (e *Engine) tcpTrack(i uint32, f *flow, d uint32, fl uint8, now int64) {
	old := f.state
	od := f.deadline()
	s := old
	switch {
	case fl&tcpRST != 0:
		s = TCPClose
	case fl&tcpSYN != 0 && fl&tcpACK == 0:
		if d == 0 && (s == TCPTimeWait || s == TCPClose) {
			// Port reuse: a new connection on the same tuple.
			s = TCPSynSent
			f.flags &^= flagFinOrig | flagFinReply
		}
	case fl&tcpSYN != 0: // SYN+ACK
		if d == 1 && s == TCPSynSent {
			s = TCPSynRecv
		}
	default:
		if fl&tcpFIN != 0 {
			if d == 0 {
				f.flags |= flagFinOrig
			} else {
				f.flags |= flagFinReply
			}
		}
		both := f.flags&(flagFinOrig|flagFinReply) == flagFinOrig|flagFinReply
		switch s {
		case TCPSynSent:
			// A mid-stream pickup (no SYN seen) or a lost SYN+ACK: any
			// answer from the other side makes it established.
			if d == 1 {
				s = TCPEstablished
			}
		case TCPSynRecv:
			if d == 0 && fl&tcpACK != 0 {
				s = TCPEstablished
			}
		case TCPEstablished:
			if fl&tcpFIN != 0 {
				s = TCPFinWait
			}
		case TCPFinWait, TCPCloseWait:
			switch {
			case both:
				s = TCPLastAck
			case s == TCPFinWait && fl&tcpACK != 0 && !e.finFrom(f, d):
				s = TCPCloseWait // the other side acknowledged the FIN
			}
		case TCPLastAck:
			if fl&tcpACK != 0 && fl&tcpFIN == 0 {
				s = TCPTimeWait
			}
		}
		if s < TCPFinWait && fl&tcpFIN != 0 {
			s = TCPFinWait
		}
	}
	dl := now + e.timeouts[s]
	if s != old {
		e.stats.TCPStates[old]--
		e.stats.TCPStates[s]++
		f.state = s
	}
	e.setDeadline(f, dl)
	if dl < od {
		e.shortened(i, f)
	}
}

// finFrom reports whether direction d has sent a FIN.
func (e *Engine) finFrom(f *flow, d uint32) bool {
	if d == 0 {
		return f.flags&flagFinOrig != 0
	}
	return f.flags&flagFinReply != 0
}
