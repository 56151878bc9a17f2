package hostif

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseForward(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tt := range []struct {
		in   string
		want ForwardSpec
		str  string // String(); "" means in
	}{
		{"tcp:8080:192.168.127.10:80", ForwardSpec{"tcp", lo, 8080, "192.168.127.10", 80}, "tcp:127.0.0.1:8080:192.168.127.10:80"},
		{"udp:127.0.0.1:5353:192.168.127.10:53", ForwardSpec{"udp", lo, 5353, "192.168.127.10", 53}, ""},
		{"tcp:0.0.0.0:2222:web:22", ForwardSpec{"tcp", netip.IPv4Unspecified(), 2222, "web", 22}, ""},
		{"tcp:1:Web-1.Arcnet.Internal:65535", ForwardSpec{"tcp", lo, 1, "web-1.arcnet.internal", 65535}, "tcp:127.0.0.1:1:web-1.arcnet.internal:65535"},
		{"tcp:[::1]:8080:10.0.0.2:80", ForwardSpec{"tcp", netip.IPv6Loopback(), 8080, "10.0.0.2", 80}, ""},
		{"udp:[::]:53:dns:53", ForwardSpec{"udp", netip.IPv6Unspecified(), 53, "dns", 53}, ""},
		{"tcp:08080:g:080", ForwardSpec{"tcp", lo, 8080, "g", 80}, "tcp:127.0.0.1:8080:g:80"},
		{"tcp:80:1host:80", ForwardSpec{"tcp", lo, 80, "1host", 80}, "tcp:127.0.0.1:80:1host:80"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseForward(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			want := tt.str
			if want == "" {
				want = tt.in
			}
			assert.Equal(t, want, got.String())
			again, err := ParseForward(got.String())
			require.NoError(t, err)
			assert.Equal(t, got, again)
		})
	}
}

func TestParseForwardErrors(t *testing.T) {
	for _, tt := range []struct {
		in, part string // part: what the error must name
	}{
		{"", "no ':' after the protocol"},
		{"tcp", "no ':' after the protocol"},
		{"sctp:80:g:80", `protocol "sctp": want tcp or udp`},
		{"TCP:80:g:80", `protocol "TCP"`},
		{"tcp:80:g", "2 ':'-separated parts"},
		{"tcp:1.2.3.4:80:g:80:1", "5 ':'-separated parts"},
		{"tcp:::1:80:g:80", "IPv6 HOSTADDR goes in brackets"},
		{"tcp:localhost:80:g:80", `HOSTADDR "localhost": want an IPv4 address`},
		{"tcp::80:g:80", `HOSTADDR ""`},
		{"tcp:[::1:80:g:80", "no closing ']'"},
		{"tcp:[1.2.3.4]:80:g:80", "want an IPv6 address in brackets"},
		{"tcp:[::ffff:1.2.3.4]:80:g:80", "want an IPv6 address in brackets"},
		{"tcp:[fe80::1%eth0]:80:g:80", "zones are not supported"},
		{"tcp:[::1]80:g:80", "want ':' after HOSTADDR"},
		{"tcp:[::1]:80:g", "want HOSTPORT:GUEST:GUESTPORT after HOSTADDR"},
		{"tcp:0:g:80", `HOSTPORT "0": want a port 1..65535`},
		{"tcp:65536:g:80", `HOSTPORT "65536"`},
		{"tcp:-1:g:80", `HOSTPORT "-1"`},
		{"tcp:+80:g:80", `HOSTPORT "+80"`},
		{"tcp::g:80", `HOSTPORT ""`},
		{"tcp:80:g:0", `GUESTPORT "0"`},
		{"tcp:80:g:http", `GUESTPORT "http"`},
		{"tcp:80::80", `GUEST ""`},
		{"tcp:80:-web:80", `GUEST "-web"`},
		{"tcp:80:web-:80", `GUEST "web-"`},
		{"tcp:80:we_b:80", `GUEST "we_b"`},
		{"tcp:80:web.:80", `GUEST "web."`},
		{"tcp:80:a..b:80", `GUEST "a..b"`},
		{"tcp:80:300.1.1.1:80", `GUEST "300.1.1.1"`},
		{"tcp:80:10.0.0.01:80", `GUEST "10.0.0.01"`},
		{"tcp:80:" + strings.Repeat("a", 64) + ":80", "GUEST"},
		{"tcp:80:" + strings.Repeat("a.", 127) + "aa:80", "GUEST"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseForward(tt.in)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrForwardSyntax)
			assert.Contains(t, err.Error(), tt.part)
			assert.Contains(t, err.Error(), ForwardSyntax, "the error shows the syntax")
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestIsHostname(t *testing.T) {
	assert.True(t, IsHostname("a"))
	assert.True(t, IsHostname(strings.Repeat("a", 63)))
	assert.True(t, IsHostname(strings.Repeat("a.", 126)+"a"))
	assert.True(t, IsHostname("x-1.example"))
	assert.True(t, IsHostname("1.2.3.a"))
	assert.False(t, IsHostname(strings.Repeat("a", 64)))
	assert.False(t, IsHostname(strings.Repeat("a.", 126)+"ab"))
	assert.False(t, IsHostname("1.2.3.4"))
	assert.False(t, IsHostname("123"))
	assert.False(t, IsHostname("ä"))
	assert.False(t, IsHostname(""))
}

func TestForwardSpecGuestAddr(t *testing.T) {
	a, ok := ForwardSpec{Guest: "192.168.127.3"}.GuestAddr()
	assert.True(t, ok)
	assert.Equal(t, netip.MustParseAddr("192.168.127.3"), a)
	_, ok = ForwardSpec{Guest: "web"}.GuestAddr()
	assert.False(t, ok)
	// The zero HostAddr is the default.
	assert.Equal(t, "tcp:127.0.0.1:80:web:81", ForwardSpec{Proto: "tcp", HostPort: 80, Guest: "web", GuestPort: 81}.String())
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{
		"tcp:8080:192.168.127.10:80", "udp:127.0.0.1:53:dns:53", "tcp:[::1]:1:a.b:2",
		"tcp:[fe80::1%x]:1:a:2", "tcp:::1:2:3:4", "udp:[::ffff:1.2.3.4]:1:a:1", "tcp:1:2:3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseForward(s)
		if err != nil {
			if !errors.Is(err, ErrForwardSyntax) {
				t.Fatalf("ParseForward(%q) error %v does not wrap ErrForwardSyntax", s, err)
			}
			return
		}
		if spec.HostPort == 0 || spec.GuestPort == 0 || (spec.Proto != "tcp" && spec.Proto != "udp") || !spec.HostAddr.IsValid() {
			t.Fatalf("ParseForward(%q) = %+v: invalid spec accepted", s, spec)
		}
		again, err := ParseForward(spec.String())
		if err != nil {
			t.Fatalf("ParseForward(%q).String() = %q does not parse: %v", s, spec.String(), err)
		}
		if again != spec {
			t.Fatalf("round trip of %q: %+v, then %+v", s, spec, again)
		}
		if again.String() != spec.String() {
			t.Fatalf("String not stable: %q, %q", spec.String(), again.String())
		}
	})
}
