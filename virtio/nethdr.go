package virtio

import "encoding/binary"

// NetHdrSize is the size of struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6),
// the header in front of every frame with VIRTIO_F_VERSION_1 or
// VIRTIO_NET_F_MRG_RXBUF.
const NetHdrSize = 12

// NetHdrSizeLegacy is the size of the legacy struct virtio_net_hdr without
// num_buffers, used when neither VIRTIO_F_VERSION_1 nor
// VIRTIO_NET_F_MRG_RXBUF is negotiated (virtio 1.2 §5.1.6.1).
const NetHdrSizeLegacy = 10

// NetHdrLen returns the size of the virtio-net header for the negotiated
// features: NetHdrSize, or NetHdrSizeLegacy for a legacy driver without
// mergeable receive buffers.
func NetHdrLen(features uint64) int {
	if features&(FVersion1|NetFMrgRxbuf) != 0 {
		return NetHdrSize
	}
	return NetHdrSizeLegacy
}

// virtio_net_hdr flags and gso_type values (virtio 1.2 §5.1.6).
const (
	// NetHdrFNeedsCsum is VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum at
	// csum_start+csum_offset is partial.
	NetHdrFNeedsCsum uint8 = 1
	// NetHdrFDataValid is VIRTIO_NET_HDR_F_DATA_VALID: the checksum is
	// known to be good.
	NetHdrFDataValid uint8 = 2
	// NetHdrFRscInfo is VIRTIO_NET_HDR_F_RSC_INFO: csum_start/csum_offset
	// carry coalescing information.
	NetHdrFRscInfo uint8 = 4

	// NetHdrGSONone is VIRTIO_NET_HDR_GSO_NONE: no segmentation.
	NetHdrGSONone uint8 = 0
	// NetHdrGSOTCPv4 is VIRTIO_NET_HDR_GSO_TCPV4.
	NetHdrGSOTCPv4 uint8 = 1
	// NetHdrGSOUDP is VIRTIO_NET_HDR_GSO_UDP (UFO).
	NetHdrGSOUDP uint8 = 3
	// NetHdrGSOTCPv6 is VIRTIO_NET_HDR_GSO_TCPV6.
	NetHdrGSOTCPv6 uint8 = 4
	// NetHdrGSOUDPL4 is VIRTIO_NET_HDR_GSO_UDP_L4 (USO).
	NetHdrGSOUDPL4 uint8 = 5
	// NetHdrGSOECN is VIRTIO_NET_HDR_GSO_ECN, or-ed into the GSO type.
	NetHdrGSOECN uint8 = 0x80
)

// NetHdr is struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6): the metadata in
// front of every frame on the transmit and receive queues, little-endian
// on the wire.
type NetHdr struct {
	Flags      uint8  // NetHdrF* bits
	GSOType    uint8  // NetHdrGSO* value
	HdrLen     uint16 // length of the headers to copy into each segment
	GSOSize    uint16 // maximum segment size (payload)
	CsumStart  uint16 // where checksumming starts
	CsumOffset uint16 // offset of the checksum field from CsumStart
	NumBuffers uint16 // number of merged receive buffers (receive only)
}

// Decode reads h from b, which must hold at least NetHdrSize bytes. A
// legacy 10-byte header can be decoded from a copy padded with zeros.
func (h *NetHdr) Decode(b []byte) {
	_ = b[NetHdrSize-1]
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.LittleEndian.Uint16(b[2:])
	h.GSOSize = binary.LittleEndian.Uint16(b[4:])
	h.CsumStart = binary.LittleEndian.Uint16(b[6:])
	h.CsumOffset = binary.LittleEndian.Uint16(b[8:])
	h.NumBuffers = binary.LittleEndian.Uint16(b[10:])
}

// Encode writes h into b, which must hold at least NetHdrSize bytes.
//
// It takes a pointer and stores field by field on purpose: with a value
// receiver the compiler copied the 12-byte struct with one 8-byte and one
// 4-byte load from where the fields had just been stored one by one (a
// register argument spilled to the stack). Such a load cannot be forwarded
// from the smaller stores and waits until every older store has reached the
// cache, among them the previous frame's stores into guest memory, which
// miss: at 64 bytes that stall was most of the receive path's time
// (perf, b2f-64).
func (h *NetHdr) Encode(b []byte) {
	_ = b[NetHdrSize-1]
	h.encodeLegacy(b)
	binary.LittleEndian.PutUint16(b[10:], h.NumBuffers)
}

// encodeLegacy writes the first NetHdrSizeLegacy bytes of h (all but
// num_buffers) into b, field by field (see Encode).
func (h *NetHdr) encodeLegacy(b []byte) {
	_ = b[NetHdrSizeLegacy-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}

// encodeLen writes the first n bytes of h, n being NetHdrSize or
// NetHdrSizeLegacy, into b.
func (h *NetHdr) encodeLen(b []byte, n int) {
	if n == NetHdrSize {
		h.Encode(b)
		return
	}
	h.encodeLegacy(b)
}
