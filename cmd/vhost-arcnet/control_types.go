package main

// The JSON of the control API (control.go), shared by the server and the
// CLI (ctl.go). Field names are the API's contract: add fields, do not
// rename them. Durations are whole seconds; addresses are strings in
// their usual form; absent values are "" (or omitted).

// apiError is every error answer: a message a person can act on.
type apiError struct {
	Error string `json:"error"`
}

// apiCounters are a port's counters (datapath.Stats): rx entered
// vhost-arcnet through the port (what the guest sent), tx left through it.
type apiCounters struct {
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	Drops     map[string]uint64 `json:"drops"` // by reason, non-zero ones only
}

// apiQueueCounters are one queue pair's frame counters
// (datapath.QueueStats): rx from its transmit queue, tx into its receive
// queue.
type apiQueueCounters struct {
	Queue     int    `json:"queue"`
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	Held      uint64 `json:"held"`
}

// apiPort is one guest port (GET /v1/ports).
type apiPort struct {
	Name   string `json:"name"`
	Active bool   `json:"active"` // false: ended, kept for its counters
	Socket string `json:"socket"`
	Role   string `json:"role"` // server (we listen) or client (we connect); stream or dgram for a frame socket
	// MAC is the address the switch learnt from the guest's frames, else
	// the one in the port's config space (ConfigMAC).
	MAC       string `json:"mac"`
	ConfigMAC string `json:"config_mac"`
	Address   string `json:"address"`  // the MAC's current DHCP lease, "" if none
	Hostname  string `json:"hostname"` // the lease's host name
	// Features are the virtio feature bits the driver acked (names), as
	// of the last ring start; FeatureBits the same as a number.
	Features    []string    `json:"features"`
	FeatureBits string      `json:"feature_bits"`
	QueuePairs  int         `json:"queue_pairs"`         // pairs with a running ring
	MaxPairs    int         `json:"queue_pairs_offered"` // --queue-pairs
	Uplink      string      `json:"uplink,omitempty"`    // measurement uplink port, if any
	Counters    apiCounters `json:"counters"`
	// Queues are the counters of each queue pair offered (a vhost-user
	// guest port; none for a frame socket).
	Queues []apiQueueCounters `json:"queues"`
}

type apiPorts struct {
	Ports []apiPort `json:"ports"`
}

// apiLease is one record of the DHCP lease database (GET /v1/leases).
type apiLease struct {
	Address   string `json:"address"`
	MAC       string `json:"mac"`
	Hostname  string `json:"hostname"`
	State     string `json:"state"`      // offered, bound, expired, released, declined
	ExpiresIn int64  `json:"expires_in"` // seconds; <= 0: past
	Reserved  bool   `json:"reserved"`   // the address is a reservation of the MAC
}

type apiLeases struct {
	Leases []apiLease `json:"leases"`
}

// apiEndpoint is one direction of a NAT flow.
type apiEndpoint struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// apiFlow is one NAT flow (GET /v1/flows).
type apiFlow struct {
	ID        string      `json:"id"` // the paging cursor: after=ID
	Proto     string      `json:"proto"`
	Side      string      `json:"side"` // where the first packet came from: guest or uplink
	Orig      apiEndpoint `json:"orig"`
	Reply     apiEndpoint `json:"reply"`
	State     string      `json:"state,omitempty"` // TCP only
	ExpiresIn int64       `json:"expires_in"`
}

type apiFlows struct {
	Flows []apiFlow `json:"flows"`
	// Total is the number of flows in the table; Next the after= of the
	// next page ("" on the last one).
	Total int    `json:"total"`
	Next  string `json:"next"`
}

// apiForward is one port forward (GET /v1/forwards).
type apiForward struct {
	Spec      string `json:"spec"`
	Proto     string `json:"proto"`
	Listen    string `json:"listen"` // the host address and port it listens on
	Guest     string `json:"guest"`  // address or host name, as given
	GuestPort uint16 `json:"guest_port"`
	// Target is where the NAT engine sends it now (guest address:port), ""
	// while the guest cannot be resolved (no lease yet).
	Target string `json:"target"`
	// Pending says why Target is "" (the guest holds no lease yet): the
	// forward follows the guest once it can be resolved.
	Pending string `json:"pending,omitempty"`
	// Origin is "config" (--forward, kept across restarts) or "api" (added
	// at run time, gone at exit).
	Origin         string `json:"origin"`
	Accepted       uint64 `json:"accepted"`
	Active         uint64 `json:"active"`
	FailedPrepare  uint64 `json:"failed_prepare"`
	FailedDial     uint64 `json:"failed_dial"`
	ToGuestBytes   uint64 `json:"bytes_to_guest"`
	FromGuestBytes uint64 `json:"bytes_from_guest"`
}

type apiForwards struct {
	Forwards []apiForward `json:"forwards"`
}

// apiForwardRequest is the body of POST /v1/forwards.
type apiForwardRequest struct {
	Spec string `json:"spec"`
}

// apiReservation is a static DHCP lease (GET/POST /v1/reservations).
type apiReservation struct {
	MAC     string `json:"mac"`
	Address string `json:"address"`
}

type apiReservations struct {
	Reservations []apiReservation `json:"reservations"`
}

// apiRecord is a DNS A record added at run time (GET/POST /v1/dns).
type apiRecord struct {
	Name    string `json:"name"` // the label alone
	FQDN    string `json:"fqdn"` // with the guests' domain (ignored in POST)
	Address string `json:"address"`
}

type apiRecords struct {
	Records []apiRecord `json:"records"`
}
