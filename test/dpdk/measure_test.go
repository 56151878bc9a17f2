package dpdk

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The start of a virtio_user txonly log of a vs-dpdk run against vhost-arcnet
// (DPDK 22.11, --stats-period=1), as recorded: three statistics screens.
const testpmdStatsRecorded = "No commandline core given, start packet forwarding\n" +
	"txonly packet forwarding - ports=1 - cores=1 - streams=1 - NUMA support enabled, MP allocation mode: native\n" +
	"\x1b[2J\x1b[1;1H\nPort statistics ====================================\n" +
	"  ######################## NIC statistics for port 0  ########################\n" +
	"  RX-packets: 0          RX-missed: 0          RX-bytes:  0\n" +
	"  RX-errors: 0\n" +
	"  RX-nombuf:  0         \n" +
	"  TX-packets: 53376      TX-errors: 0          TX-bytes:  3416064\n\n" +
	"  Throughput (since last show)\n" +
	"  Rx-pps:            0          Rx-bps:            0\n" +
	"  Tx-pps:            0          Tx-bps:            0\n" +
	"  ############################################################################\n" +
	"\x1b[2J\x1b[1;1H\nPort statistics ====================================\n" +
	"  ######################## NIC statistics for port 0  ########################\n" +
	"  RX-packets: 0          RX-missed: 0          RX-bytes:  0\n" +
	"  RX-errors: 0\n" +
	"  RX-nombuf:  0         \n" +
	"  TX-packets: 6376256    TX-errors: 0          TX-bytes:  408080384\n\n" +
	"  Throughput (since last show)\n" +
	"  Rx-pps:            0          Rx-bps:            0\n" +
	"  Tx-pps:      3136744          Tx-bps:   1606013240\n" +
	"  ############################################################################\n" +
	"\x1b[2J\x1b[1;1H\nPort statistics ====================================\n" +
	"  ######################## NIC statistics for port 0  ########################\n" +
	"  RX-packets: 0          RX-missed: 0          RX-bytes:  0\n" +
	"  RX-errors: 0\n" +
	"  RX-nombuf:  0         \n" +
	"  TX-packets: 12424384   TX-errors: 0          TX-bytes:  795160576\n\n" +
	"  Throughput (since last show)\n" +
	"  Rx-pps:            0          Rx-bps:            0\n" +
	"  Tx-pps:      6002275          Tx-bps:   3073164992\n" +
	"  ############################################################################\n"

func TestParseRates(t *testing.T) {
	require.Equal(t, []uint64{0, 3136744, 6002275}, ParseRates(testpmdStatsRecorded, TxPPS))
	require.Equal(t, []uint64{0, 0, 0}, ParseRates(testpmdStatsRecorded, RxPPS))
	v, ok := ParseRateLine("  Rx-pps:      1434678          Rx-bps:    734555512", RxPPS)
	require.True(t, ok)
	require.Equal(t, uint64(1434678), v)
	_, ok = ParseRateLine("  Rx-pps:      1434678          Rx-bps:    734555512", TxPPS)
	require.False(t, ok)
	_, ok = ParseRateLine("  Tx-pps:", TxPPS) // cut short
	require.False(t, ok)
	require.NotContains(t, ReadableTestpmdLog(testpmdStatsRecorded), "pps")
}

func TestParseProc(t *testing.T) {
	// /proc/stat as recorded here (steal 0), and the same line with steal time.
	stat := "cpu  174498 0 82454 222418 641 0 8403 0 0 0\n" +
		"cpu0 84749 0 40902 114294 110 0 4232 0 0 0\n" +
		"cpu1 89748 0 41551 108124 531 0 4171 57 0 0\n" +
		"cpu10 1 1 1 1 1 1 1 99 0 0\n" +
		"intr 9927914 0 0 0\n"
	d, ok := ParseSteal(stat, 0)
	require.True(t, ok)
	require.Zero(t, d)
	d, ok = ParseSteal(stat, 1)
	require.True(t, ok)
	require.Equal(t, 570*time.Millisecond, d)
	_, ok = ParseSteal(stat, 2)
	require.False(t, ok)

	run, wait, ok := ParseSchedstat("2110450123 773000456 981\n")
	require.True(t, ok)
	require.Equal(t, time.Duration(2110450123), run)
	require.Equal(t, time.Duration(773000456), wait)
	_, _, ok = ParseSchedstat("")
	require.False(t, ok)
}

func TestLineReader(t *testing.T) {
	path := t.TempDir() + "/log"
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	lr, err := OpenLines(path)
	require.NoError(t, err)
	defer lr.Close()
	_, _ = f.WriteString("one\ntw")
	lines, err := lr.Next()
	require.NoError(t, err)
	require.Equal(t, []string{"one"}, lines)
	lines, _ = lr.Next()
	require.Empty(t, lines)
	_, _ = f.WriteString("o\nthree\n")
	lines, _ = lr.Next()
	require.Equal(t, []string{"two", "three"}, lines)
}

func TestSizeArgs(t *testing.T) {
	tx, rx, both := SizeArgs(64)
	require.Equal(t, []string{"--txpkts=64"}, tx)
	require.Empty(t, rx)
	require.Empty(t, both)
	tx, rx, both = SizeArgs(9000)
	require.Equal(t, []string{"--mbuf-size=9152", "--txpkts=9000"}, tx)
	require.Equal(t, []string{"--enable-scatter"}, rx)
	require.Equal(t, []string{"--max-pkt-len=9018"}, both)
}

// line is one rate line of a run and the /proc times read with it
// (milliseconds since the run started).
type line struct {
	at, fe, be, wait, steal int
	pps                     uint64
}

func feed(s *Sampler, lines []line) []Step {
	var steps []Step
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	for _, l := range lines {
		steps = append(steps, s.Add(l.pps, Reading{At: ms(l.at), FeRun: ms(l.fe), BeRun: ms(l.be), BeWait: ms(l.wait), Steal: ms(l.steal)}))
	}
	return steps
}

// run of a busy backend (DPDK, arcnet --poll): one line a second.
var busyRun = []line{
	{at: 1000, pps: 0}, // 1: before the first non-zero rate
	{at: 2000, fe: 1000, be: 1000, pps: 1_000_000},     // 2: first non-zero: warm-up starts
	{at: 3000, fe: 2000, be: 2000, pps: 5_000_000},     // 3: 1 s into the warm-up
	{at: 4000, fe: 2990, be: 3000, pps: 10_000_000},    // 4: counted, clean (fe 990 ‰, be 1000 ‰)
	{at: 5000, fe: 3490, be: 4000, pps: 2_000_000},     // 5: the frontend had 500 ‰
	{at: 6600, fe: 5090, be: 5600, pps: 3_000_000},     // 6: interval 1.6 s after 1 s: the reader was held up
	{at: 7600, fe: 6090, be: 6600, pps: 4_000_000},     // 7: 1 s after 1.6 s
	{at: 8600, fe: 7090, be: 7560, pps: 11_000_000},    // 8: clean (be 960 ‰)
	{at: 9600, fe: 8090, be: 8500, pps: 5_000_000},     // 9: the backend had 940 ‰
	{at: 10600, fe: 9090, be: 9500, pps: 12_000_000},   // 10: clean: 3 s of clean samples
	{at: 11600, fe: 10090, be: 10500, pps: 99_000_000}, // never reached
}

func TestSamplerBusy(t *testing.T) {
	cfg := FilterConfig{Warmup: 2 * time.Second, Want: 3 * time.Second, Max: 9 * time.Second, MinShare: 0.95, Filter: true, BusyBackend: true}
	s := NewSampler(cfg)
	steps := feed(s, busyRun[:10])
	var window []bool
	var clean []bool
	for _, st := range steps {
		window = append(window, st.BeforeWindow)
		if st.Sample != nil {
			clean = append(clean, st.Sample.Clean)
		}
	}
	require.Equal(t, []bool{false, true, true, false, false, false, false, false, false, false}, window)
	require.Equal(t, []bool{true, false, false, false, true, false, true}, clean)
	for i, st := range steps {
		require.Equal(t, i == 9, st.Done, "line %d", i+1)
	}
	require.Equal(t, 10, s.Lines())
	require.Equal(t, "4 10000000 1 990 1000 0 1000000", s.Samples[0].String())
	require.Equal(t, "6 3000000 0 1000 1000 0 1600000", s.Samples[2].String())
	require.Equal(t, 940, s.Samples[5].BE)

	res := s.Result(true)
	require.Equal(t, Filtered, res.Flag)
	require.Equal(t, 11.0, res.Mpps) // median of the clean 10, 11, 12 Mpps
	require.Equal(t, 3, res.Clean)
	require.Equal(t, 7, res.Total)
	require.Equal(t, 1.0, res.FE)
	require.Equal(t, 1.0, res.BE)

	// without the filter the run ends after 3 s of any samples (lines 4-6)
	s = NewSampler(FilterConfig{Warmup: 2 * time.Second, Want: 3 * time.Second, Max: 9 * time.Second, MinShare: 0.95, BusyBackend: true})
	steps = feed(s, busyRun[:6])
	require.True(t, steps[5].Done)
	require.False(t, steps[4].Done)
	res = s.Result(false)
	require.Equal(t, Unfiltered, res.Flag)
	require.Equal(t, 3.0, res.Mpps) // median of 10, 2, 3 Mpps
	require.Equal(t, 1, res.Clean)

	// Max ends a run that never gets its clean seconds
	s = NewSampler(FilterConfig{Warmup: 2 * time.Second, Want: 30 * time.Second, Max: 4 * time.Second, MinShare: 0.95, Filter: true, BusyBackend: true})
	steps = feed(s, busyRun)
	require.True(t, steps[7].Done) // 1+1+1.6+1 s counted at line 8
}

func TestSamplerEventDriven(t *testing.T) {
	// An eventfd-driven backend sleeps: its on-CPU share does not matter, its
	// run-queue wait plus the CPU's steal time must stay within 1-MinShare.
	cfg := FilterConfig{Warmup: time.Second, Want: 10 * time.Second, Max: 30 * time.Second, MinShare: 0.95, Filter: true}
	s := NewSampler(cfg)
	feed(s, []line{
		{at: 1000, pps: 7_000_000},
		{at: 2000, fe: 1000, be: 300, wait: 10, steal: 0, pps: 7_000_000},   // counted, not clean: no interval before to compare with
		{at: 3000, fe: 2000, be: 600, wait: 40, steal: 30, pps: 6_000_000},  // wait 30 + steal 30 = 60 ‰
		{at: 4000, fe: 3000, be: 900, wait: 50, steal: 40, pps: 8_000_000},  // 10 + 10 = 20 ‰
		{at: 5000, fe: 4000, be: 1200, wait: 40, steal: 40, pps: 9_000_000}, // counters going back: 0 ‰
	})
	var got []string
	for _, x := range s.Samples {
		got = append(got, x.String())
	}
	require.Equal(t, []string{
		"2 7000000 0 1000 300 10 1000000",
		"3 6000000 0 1000 300 60 1000000",
		"4 8000000 1 1000 300 20 1000000",
		"5 9000000 1 1000 300 0 1000000",
	}, got)
	res := s.Result(true)
	require.Equal(t, 8.5, res.Mpps) // median of the clean 8 and 9 Mpps
	require.Equal(t, 0.3, res.BE)
	require.Equal(t, 0.01, res.Wait)

	// none clean: the figure is the median of all samples, flagged
	s = NewSampler(cfg)
	feed(s, []line{{at: 1000, pps: 1}, {at: 2000, pps: 2_000_000}, {at: 3000, pps: 4_000_000}})
	res = s.Result(true)
	require.Equal(t, Unfiltered, res.Flag)
	require.Equal(t, 3.0, res.Mpps)
	require.Equal(t, 0, res.Clean)
	require.Equal(t, 2, res.Total)

	// no samples at all
	res = NewSampler(cfg).Result(true)
	require.True(t, math.IsNaN(res.Mpps))
	require.True(t, res.NoSamples)
}

func TestCounterMpps(t *testing.T) {
	log := []byte(`{"msg":"listening","path":"/tmp/s"}
{"msg":"port stats","port":"guest0","rx_packets":7646528,"tx_packets":0}
{"msg":"port stats","port":"guest0-sink","rx_packets":0,"tx_packets":7646528}
{"msg":"port stats","port":"guest0","rx_packets":46264160,"tx_packets":0}
{"msg":"port stats","port":"guest0","rx_packets":64033536,"tx_packets":5}
`)
	// records 1 and 2 of guest0, 6.034 s apart (a recorded run: 6.400 Mpps)
	require.Equal(t, 6.4, CounterMpps(log, "guest0", false, 1, 6034*time.Millisecond))
	require.Equal(t, 2.945, CounterMpps(log, "guest0", false, 2, 6034*time.Millisecond))
	require.True(t, math.IsNaN(CounterMpps(log, "guest0", false, 3, time.Second)))
	require.True(t, math.IsNaN(CounterMpps(log, "guest0", false, 0, time.Second)))
	require.Equal(t, 0.0, CounterMpps(log, "guest0", true, 1, time.Second))
}

func TestCaseLine(t *testing.T) {
	nan := math.NaN()
	dpdk := Runs{
		{Mpps: 23.912, CtrMpps: nan, Clean: 10, Total: 10, FE: 0.99, BE: 1, Flag: Filtered},
		{Mpps: 12.001, CtrMpps: nan, Clean: 0, Total: 10, FE: 0.61, BE: 0.98, Flag: Unfiltered},
		{Mpps: 24.1, CtrMpps: nan, Clean: 10, Total: 10, FE: 1, BE: 1, Flag: Filtered},
	}
	arcnet := Runs{
		{Mpps: 10.5, CtrMpps: 10.4, Clean: 12, Total: 15, FE: 1, BE: 0.42, Flag: Filtered},
		FailedRun(),
		{Mpps: 11.25, CtrMpps: 11.2, Clean: 13, Total: 16, FE: 0.99, BE: 0.4, Flag: Filtered},
	}
	// What bench/vs-dpdk.sh's awk printed for the same runs.
	require.Equal(t, "case=f2b-64 arcnet_mpps=10.875 dpdk_mpps=24.006 arcnet_gbps=5.57 dpdk_gbps=12.29 ratio=0.45"+
		" ratio_of_max=0.47 arcnet_ctr_mpps=10.800 arcnet_range=10.500..11.250 dpdk_range=23.912..24.100"+
		" arcnet_clean=25/31 dpdk_clean=20/30 arcnet_cpu_fe/be=1.00/0.42,0/0,0.99/0.40"+
		" dpdk_cpu_fe/be=0.99/1.00,0.61/0.98,1.00/1.00 mem=nohuge",
		CaseLine("f2b-64", 64, arcnet, dpdk, "nohuge"))
	require.Equal(t, "case=b2f-1518-poll arcnet_mpps=NA dpdk_mpps=7.260 arcnet_gbps=NA dpdk_gbps=88.17 ratio=NA"+
		" ratio_of_max=NA arcnet_ctr_mpps=NA arcnet_range=NA..NA dpdk_range=7.260..7.260 arcnet_clean=0/0"+
		" dpdk_clean=3/5 arcnet_cpu_fe/be=NA dpdk_cpu_fe/be=0.99/1.00 mem=huge",
		CaseLine("b2f-1518-poll", 1518, nil, Runs{{Mpps: 7.26, CtrMpps: nan, Clean: 3, Total: 5, FE: 0.99, BE: 1, Flag: Filtered}}, "huge"))
	require.True(t, strings.HasPrefix(CaseLine("x", 64, Runs{FailedRun()}, Runs{FailedRun()}, "nohuge"),
		"case=x arcnet_mpps=NA dpdk_mpps=NA arcnet_gbps=NA dpdk_gbps=NA ratio=NA ratio_of_max=NA"))
}
