//go:build linux

package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	c, err := parseFlags(nil, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 5, c.dur)
	require.Equal(t, 15, c.maxsec)
	require.Equal(t, []string{"f2b-64", "f2b-1518", "b2f-64", "b2f-1518"}, c.cases)
	require.Equal(t, []string{"event", "poll"}, c.modes)
	require.True(t, c.filter)
	require.True(t, c.keep)
	require.Equal(t, "nohuge", c.mem)
	require.Equal(t, 0, c.beCPU)
	require.Equal(t, 1, c.feCPU)
	require.Equal(t, 0.95, c.minshare)

	// the shell script's environment knobs are the defaults; flags win
	c, err = parseFlags([]string{"-rounds", "2", "3"}, env(map[string]string{
		"CASES": "b2f-9000", "MODES": "poll", "ROUNDS": "7", "FILTER": "0", "KEEP": "0",
		"EAL_FE": "--log-level=pmd.net.virtio.*:debug --in-memory", "VIRTIO_ARGS": ",mrg_rxbuf=0",
	}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 3, c.dur)
	require.Equal(t, 9, c.maxsec)
	require.Equal(t, 2, c.rounds)
	require.Equal(t, []string{"b2f-9000"}, c.cases)
	require.Equal(t, []string{"poll"}, c.modes)
	require.False(t, c.filter)
	require.False(t, c.keep)
	require.Equal(t, []string{"--log-level=pmd.net.virtio.*:debug", "--in-memory"}, c.ealFE)
	require.Equal(t, ",mrg_rxbuf=0", c.virtioArgs)

	// packed virtqueue and like-for-like cases
	c, err = parseFlags([]string{"-cases", "f2b-1518-packed b2f-64 f2b-copy-64 loop-1518-packed"}, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"f2b-1518-packed", "b2f-64", "f2b-copy-64", "loop-1518-packed"}, c.cases)
	for dir, want := range map[string]string{dirF2B: "no", dirF2BCopy: "yes", dirB2F: "yes", dirLoop: "yes"} {
		require.Equal(t, want, likeForLike(dir), dir)
	}
	for _, tc := range []struct {
		cs     string
		dir    string
		size   int
		packed bool
	}{
		{"f2b-1518-packed", "f2b", 1518, true},
		{"b2f-64", "b2f", 64, false},
		{"f2b-copy-64", "f2b-copy", 64, false},
		{"f2b-copy-1518-packed", "f2b-copy", 1518, true},
		{"loop-64", "loop", 64, false},
		{"loop-9000-packed", "loop", 9000, true},
		{"f2b-packed", "", 0, false},
		{"f2b-64-split", "", 0, false},
		{"f2b-copy", "", 0, false},
		{"copy-64", "", 0, false},
		{"b2f-copy-64", "", 0, false},
		{"loop--64", "", 0, false},
		{"loop-packed-64", "", 0, false},
		{"-64", "", 0, false},
	} {
		dir, size, packed := parseCase(tc.cs)
		require.Equal(t, tc.dir, dir, tc.cs)
		require.Equal(t, tc.size, size, tc.cs)
		require.Equal(t, tc.packed, packed, tc.cs)
	}

	for _, bad := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"0"}},
		{args: []string{"x"}},
		{args: []string{"1", "2"}},
		{args: []string{"-cases", "f2b"}},
		{args: []string{"-cases", "x2y-64"}},
		{args: []string{"-cases", "f2b--64"}},
		{args: []string{"-cases", "f2b-packed"}},
		{args: []string{"-cases", "f2b-0-packed"}},
		{args: []string{"-cases", "f2b-copy"}},
		{args: []string{"-cases", "loop-64 f2b-copy--1"}},
		{args: []string{"-modes", "spin"}},
		{args: []string{"-mem", "big"}},
		{env: map[string]string{"ROUNDS": "three"}},
		{env: map[string]string{"FILTER": "yes"}},
		{env: map[string]string{"MINSHARE": "most"}},
	} {
		_, err := parseFlags(bad.args, env(bad.env), io.Discard)
		require.Error(t, err, "%v %v", bad.args, bad.env)
	}
}
