package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/arcnet/vhost-arcnet/datapath/header"
)

// Live migration: a guest moves from one guest port (the source frontend's
// connection) to another (the destination's), keeping its MAC address.
// The destination frontend asks the backend to announce the guest where
// it now is (vhost-user SEND_RARP, sent by QEMU for a guest without
// VIRTIO_NET_F_GUEST_ANNOUNCE: QEMU hw/virtio/vhost-user.c
// vhost_user_migration_done). The switch then moves the MAC's ownership
// and its MAC table entry to the new port at once, instead of refusing
// the guest's frames as spoofed until the old port is detached, and the
// port broadcasts a RARP so that every other port (and whatever sits
// behind an uplink) learns the new place.

// EtherTypeRARP is the EtherType of RARP (RFC 903).
const EtherTypeRARP = 0x8035

// rarpLen is a RARP frame padded to the Ethernet minimum without FCS
// (IEEE 802.3 §3.2.8: 64 bytes with the 4-byte FCS): what QEMU's own
// announcement sends (net/announce.c announce_self_create).
const rarpLen = 60

// ownMoved marks the own MAC of a port whose guest moved to another port:
// a value no 48-bit MAC key equals, so every frame the port still sends is
// refused by anti-spoofing.
const ownMoved = 1 << 48

// Runner is an optional Port interface: Running reports whether the port
// serves a guest right now. A GuestPort is running while any of its queues
// is started; a frontend stops every queue of a guest it migrates away
// before the destination starts (vhost-user spec "Migration": the
// front-end stops the rings with GET_VRING_BASE).
type Runner interface {
	Running() bool
}

// Running reports whether any queue of the port is started. It takes no
// lock (the switch asks it under its own).
func (p *GuestPort) Running() bool { return p.started.Load() != 0 }

// macTaker is a GuestPort's peer that can move a MAC to it (SwitchPort).
type macTaker interface {
	TakeMAC(mac header.MAC) error
}

// SendRARP is vhostuser.RARPSender: after a live migration the destination
// frontend gives the guest's MAC. The port takes the MAC in the switch
// (SwitchPort.TakeMAC) and broadcasts a RARP request from it (RFC 903:
// opcode 3, "request reverse", sender and target hardware address the
// guest's, protocol addresses 0, as QEMU's announce_self_create builds
// it). A peer that is not a switch (measurement uplinks) gets the frame
// alone. A MAC the switch refuses is logged and nothing is sent.
func (p *GuestPort) SendRARP(mac [6]byte) {
	pp := p.peer.Load()
	if pp == nil {
		return
	}
	peer := *pp
	if mt, ok := peer.(macTaker); ok {
		if err := mt.TakeMAC(header.MAC(mac)); err != nil {
			p.log.Warn("SEND_RARP refused: the MAC stays where it is", "mac", header.MAC(mac).String(), "err", err)
			return
		}
	}
	var b [rarpLen]byte
	f := RARPFrame(b[:0], header.MAC(mac))
	peer.Send([]Frame{{Segs: [][]byte{f}, Len: len(f)}})
	p.log.Info("guest announced on this port (SEND_RARP)", "mac", header.MAC(mac).String())
}

// RARPFrame appends to dst the broadcast RARP request (RFC 903) that
// announces mac, padded to 60 bytes, and returns it.
func RARPFrame(dst []byte, mac header.MAC) []byte {
	var f [rarpLen]byte
	copy(f[0:6], header.BroadcastMAC[:])
	copy(f[6:12], mac[:])
	binary.BigEndian.PutUint16(f[12:], EtherTypeRARP)
	binary.BigEndian.PutUint16(f[14:], 1)      // hardware type: Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // protocol type: IPv4
	f[18], f[19] = 6, 4                        // address lengths
	binary.BigEndian.PutUint16(f[20:], 3)      // "request reverse"
	copy(f[22:28], mac[:])                     // sender hardware address
	copy(f[32:38], mac[:])                     // target hardware address
	return append(dst, f[:]...)
}

// ErrMACInUse says a MAC cannot move: its port still runs a guest.
var ErrMACInUse = errors.New("datapath: the MAC's port still runs")

// TakeMAC makes mac sp's own address and points the MAC table at sp at
// once (a guest that migrated to sp's port): the port that owned mac so
// far keeps its attachment but may send nothing any more. It refuses a
// group address, a port that already owns another MAC, a detached port,
// and a MAC whose current port is still running (Runner; a port without
// Running counts as running): one frontend cannot take a live guest's
// address from another.
func (sp *SwitchPort) TakeMAC(mac header.MAC) error {
	s := sp.sw
	key := macKey(mac[:])
	if isGroupKey(key) || key == 0 {
		return fmt.Errorf("datapath: take MAC %s: not a unicast address", mac)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sp.detached.Load() {
		return fmt.Errorf("datapath: take MAC %s: port %s is detached", mac, sp.port.Name())
	}
	if own := sp.own.Load(); own != 0 {
		if own == key|ownValid {
			return nil
		}
		if own&ownMoved == 0 {
			return fmt.Errorf("datapath: take MAC %s: port %s owns %s", mac, sp.port.Name(), header.MAC(macBytes(own&^ownValid)))
		}
	}
	if o, ok := (*s.owners.Load())[key]; ok && o != sp.idx {
		old := (*s.ports.Load())[o]
		if old != nil {
			if r, ok := old.port.(Runner); !ok || r.Running() {
				return fmt.Errorf("%w: take MAC %s from %s", ErrMACInUse, mac, old.port.Name())
			}
			old.own.Store(ownValid | ownMoved)
			s.log.Info("switch port's MAC moved to another port (live migration)",
				"mac", mac.String(), "from", old.port.Name(), "to", sp.port.Name())
		}
		owners := maps.Clone(*s.owners.Load())
		delete(owners, key)
		s.owners.Store(&owners)
	}
	s.own(sp, key) // the static entry replaces the old port's: the table moves now
	return nil
}
