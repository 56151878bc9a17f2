package xdp

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPortSet(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"8080", "8080"},
		{"8080,9148-9149", "8080,9148-9149"},
		{"9149,9148, 8080", "8080,9148-9149"},
		{"1-3,4-6", "1-6"},
		{"0-65535", "0-65535"},
		{"65535", "65535"},
	} {
		p, err := parsePortSet(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, p.String(), tc.in)
	}
	for _, bad := range []string{"x", "1-", "-1", "5-3", "65536", "1,,2", "1-2-3"} {
		_, err := parsePortSet(bad)
		require.Error(t, err, bad)
	}
}

// FuzzPortSet: any list the parser takes formats to one that parses to the
// same set.
func FuzzPortSet(f *testing.F) {
	f.Add("8080,9148-9149")
	f.Add("0-65535")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePortSet(s)
		if err != nil {
			return
		}
		q, err := parsePortSet(p.String())
		if err != nil || *q != *p {
			t.Fatalf("%q -> %q -> %v", s, p.String(), err)
		}
	})
}
