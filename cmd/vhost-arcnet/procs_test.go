package main

import "testing"

// TestProcsFor: one P becomes minProcs unless the environment chose it;
// more are kept.
func TestProcsFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		cur  int
		want int
	}{
		{"one CPU", "", 1, minProcs},
		{"two CPUs", "", 2, 2},
		{"many CPUs", "", 64, 64},
		{"GOMAXPROCS=1 set", "1", 1, 1},
		{"GOMAXPROCS=3 set", "3", 3, 3},
		{"GOMAXPROCS unparsable: the runtime's value", "x", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := procsFor(tc.env, tc.cur); got != tc.want {
				t.Errorf("procsFor(%q, %d) = %d, want %d", tc.env, tc.cur, got, tc.want)
			}
		})
	}
}
