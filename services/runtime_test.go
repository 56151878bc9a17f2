package services

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// A reservation added at run time steers its guest to the address at the
// next exchange, keeps other guests off it, and is gone once removed.
func TestRuntimeReservation(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	mac1, mac2 := net.HardwareAddr(guestMAC1[:]), net.HardwareAddr(guestMAC2[:])
	first := newClient(t, g, guestMAC1).dora()
	res := netip.MustParseAddr("192.168.127.200")
	require.NoError(t, g.AddReservation(Reservation{MAC: mac1, Addr: res}))
	require.Equal(t, []Reservation{{MAC: mac1, Addr: res}}, g.Reservations())
	require.NotEqual(t, res, first)

	// The guest is refused its old address and learns the reserved one.
	c1 := newClient(t, g, guestMAC1)
	c1.send(c1.msg(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(first)))), zeroIP, bcastIP)
	nak, _ := c1.recv()
	require.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())
	require.Equal(t, res, c1.dora())

	// Another guest asking for it gets something else.
	c2 := newClient(t, g, guestMAC2)
	c2.send(c2.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(res)))), zeroIP, bcastIP)
	offer, _ := c2.recv()
	require.False(t, offer.YourIPAddr.Equal(ip4(res)))

	// Conflicts and bad values, each with its reason.
	for _, tc := range []struct {
		r        Reservation
		conflict bool
		msg      string
	}{
		{Reservation{MAC: mac1, Addr: netip.MustParseAddr("192.168.127.201")}, true, "reserved 192.168.127.200 already"},
		{Reservation{MAC: mac2, Addr: res}, true, "reserved for 52:54:00:00:00:01"},
		{Reservation{MAC: mac2, Addr: testGW}, true, "gateway's address"},
		{Reservation{MAC: mac2, Addr: netip.MustParseAddr("10.0.0.1")}, false, "guest subnet 192.168.127.0/24"},
		{Reservation{MAC: mac2, Addr: netip.MustParseAddr("192.168.127.255")}, false, "host address"},
		{Reservation{MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}, Addr: netip.MustParseAddr("192.168.127.9")}, false, "unicast MAC"},
	} {
		err := g.AddReservation(tc.r)
		require.ErrorContains(t, err, tc.msg)
		require.Equal(t, tc.conflict, errors.Is(err, ErrConflict), "%v", err)
	}
	// An address another guest holds now is refused.
	held := newClient(t, g, guestMAC3).dora()
	err := g.AddReservation(Reservation{MAC: mac2, Addr: held})
	require.ErrorIs(t, err, ErrConflict)
	require.ErrorContains(t, err, "bound by 52:54:00:00:00:03")

	r, err := g.RemoveReservation(mac1)
	require.NoError(t, err)
	require.Equal(t, res, r.Addr)
	require.Empty(t, g.Reservations())
	_, err = g.RemoveReservation(mac1)
	require.ErrorIs(t, err, ErrNotFound)
	// The guest still holds its lease: only it may have the address
	// reserved again.
	require.ErrorIs(t, g.AddReservation(Reservation{MAC: mac2, Addr: res}), ErrConflict)
	require.NoError(t, g.AddReservation(Reservation{MAC: mac1, Addr: res}))
}

// Records added at run time are answered (forward and reverse), win over
// a guest's DHCP host name, and are gone once removed.
func TestRuntimeRecords(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	web := newClient(t, g, guestMAC1).dora(dhcpv4.WithOption(dhcpv4.OptHostName("web")))

	db := netip.MustParseAddr("192.168.127.77")
	r, err := g.AddRecord("DB.arcnet.internal.", db)
	require.NoError(t, err)
	require.Equal(t, Record{Name: "db", Addr: db}, r)
	_, err = g.AddRecord("web", netip.MustParseAddr("10.1.2.3"))
	require.NoError(t, err)
	require.Equal(t, []Record{{"db", db}, {"web", netip.MustParseAddr("10.1.2.3")}}, g.Records())

	a := func(name string) (int, string) {
		resp := ask(t, g, question(name, dns.TypeA), true)
		if len(resp.Answer) == 0 {
			return resp.Rcode, ""
		}
		return resp.Rcode, resp.Answer[0].(*dns.A).A.String()
	}
	rc, got := a("db.arcnet.internal.")
	require.Equal(t, dns.RcodeSuccess, rc)
	require.Equal(t, db.String(), got)
	_, got = a("web.arcnet.internal.")
	require.Equal(t, "10.1.2.3", got, "a record wins over a DHCP host name")
	ptr := ask(t, g, question(reverseName(db), dns.TypePTR), true)
	require.Len(t, ptr.Answer, 1)
	require.Equal(t, "db.arcnet.internal.", ptr.Answer[0].(*dns.PTR).Ptr)

	for _, bad := range []struct{ name, addr, msg string }{
		{"gateway", "192.168.127.9", "gateway's own name"},
		{"a.b", "192.168.127.9", "one label under arcnet.internal"},
		{"web.example.com", "192.168.127.9", "one label"},
		{"-x", "192.168.127.9", "letters, digits"},
		{"ok", "224.0.0.1", "unicast IPv4"},
		{"ok", "::1", "unicast IPv4"},
	} {
		_, err := g.AddRecord(bad.name, netip.MustParseAddr(bad.addr))
		require.ErrorContains(t, err, bad.msg, bad.name)
	}

	removed, err := g.RemoveRecord("web.arcnet.internal")
	require.NoError(t, err)
	require.Equal(t, "web", removed.Name)
	_, got = a("web.arcnet.internal.")
	require.Equal(t, web.String(), got, "the guest's own name again")
	_, err = g.RemoveRecord("web")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = g.RemoveRecord("db")
	require.NoError(t, err)
	rc, _ = a("db.arcnet.internal.")
	require.Equal(t, dns.RcodeNameError, rc)
}

// Records and reservations change while queries and DHCP run (go test
// -race).
func TestRuntimeConcurrent(t *testing.T) {
	g, _ := newTestGateway(t, nil)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 200 {
			n := fmt.Sprint("n", i%7)
			_, _ = g.AddRecord(n, netip.AddrFrom4([4]byte{192, 168, 127, byte(10 + i%7)}))
			_, _ = g.RemoveRecord(n)
			m := net.HardwareAddr{0x52, 0x54, 0, 0, 1, byte(i % 5)}
			_ = g.AddReservation(Reservation{MAC: m, Addr: netip.AddrFrom4([4]byte{192, 168, 127, byte(100 + i%5)})})
			_, _ = g.RemoveReservation(m)
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 200 {
			_ = g.Records()
			_ = g.Reservations()
			_, _ = g.dns.records.lookup(fmt.Sprint("n", i%7))
			_, _ = g.db.reservation([6]byte{0x52, 0x54, 0, 0, 1, byte(i % 5)})
		}
	}()
	wg.Wait()
}
