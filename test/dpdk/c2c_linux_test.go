package dpdk

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestC2CRoundTrip(t *testing.T) {
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &set))
	if set.Count() < 2 || !set.IsSet(0) || !set.IsSet(1) {
		t.Skip("needs CPUs 0 and 1")
	}
	// With one P, as vs-dpdk runs: C2CRoundTrip raises it for itself.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	d, err := C2CRoundTrip(0, 1)
	if err == errC2CStuck {
		t.Skip("the other CPU is busy: ", err)
	}
	require.NoError(t, err)
	t.Logf("round trip between CPUs 0 and 1: %v", d)
	require.Greater(t, d, time.Duration(0))
	require.Less(t, d, 100*time.Microsecond, "a cache line round trip, not a scheduling delay")
	// The thread is back on every CPU it had.
	var after unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &after))
	require.Equal(t, set.Count(), after.Count())
	require.Equal(t, 1, runtime.GOMAXPROCS(0))

	_, err = C2CRoundTrip(0, 4096)
	require.ErrorContains(t, err, "pin to CPU 4096")

	require.Equal(t, "NA", Runs(nil).C2CString())
	require.Equal(t, "148,NA", Runs{{C2C: 148 * time.Nanosecond}, {}}.C2CString())
}
