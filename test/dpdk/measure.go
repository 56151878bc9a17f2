package dpdk

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The measurement of the side-by-side comparison (cmd/vs-dpdk): the CPU-share
// filter over testpmd's periodic rates, the figure of a run, and a case's line.

// SizeArgs are testpmd's frame-size dependent arguments, as DPDK's own tests
// use them: tx for the sender (big frames need big single-segment mbufs:
// --mbuf-size before --txpkts), rx for a virtio_user receiver (scatter) and
// both for either process (--max-pkt-len). size is the frame without the
// virtio header.
func SizeArgs(size int) (tx, rx, both []string) {
	tx = []string{"--txpkts=" + strconv.Itoa(size)}
	if size > 1518 {
		mbuf := (size + 128 + 63) / 64 * 64
		tx = []string{"--mbuf-size=" + strconv.Itoa(mbuf), "--txpkts=" + strconv.Itoa(size)}
		rx = []string{"--enable-scatter"}
		both = []string{"--max-pkt-len=" + strconv.Itoa(size+18)}
	}
	return tx, rx, both
}

// Reading is what the comparison reads from /proc when a rate line arrives.
type Reading struct {
	At     time.Duration // when the line was read (any fixed origin)
	FeRun  time.Duration // on-CPU time of the frontend's forwarding thread
	BeRun  time.Duration // backend's on-CPU time: DPDK's forwarding thread, or all of vhost-arcnet's threads
	BeWait time.Duration // the same threads' run-queue wait
	Steal  time.Duration // the hypervisor's steal time on the backend's CPU
}

// FilterConfig is the CPU-share filter of one run.
type FilterConfig struct {
	Warmup   time.Duration // samples that end less than this after the first non-zero rate are dropped
	Want     time.Duration // the run ends when its clean samples cover this (all samples without Filter)
	Max      time.Duration // ... or all of them this (with Filter)
	MinShare float64       // a clean sample: each forwarding thread had at least this share of its CPU
	Filter   bool          // false: the run ends after Want of samples, clean or not
	// BusyBackend: the backend busy-polls (DPDK, arcnet --poll) and must have
	// MinShare of its CPU; otherwise (eventfd-driven arcnet, which sleeps by
	// design) its run-queue wait plus the CPU's steal time must stay within
	// 1-MinShare of the interval.
	BusyBackend bool
}

// Sample is one counted sample (a rate line after the warm-up): shares in
// per mille of the interval DT since the previous rate line.
type Sample struct {
	N            int // the rate line's number in the run, from 1
	PPS          uint64
	Clean        bool
	FE, BE, Wait int // frontend on-CPU, backend on-CPU, backend wait + steal
	DT           time.Duration
}

// String is the sample's line in the per-run samples file:
// "N PPS CLEAN FE BE WAIT DT_US".
func (s Sample) String() string {
	c := 0
	if s.Clean {
		c = 1
	}
	return fmt.Sprintf("%d %d %d %d %d %d %d", s.N, s.PPS, c, s.FE, s.BE, s.Wait, s.DT.Microseconds())
}

// Step says what one rate line did to the run.
type Step struct {
	Sample *Sample // the counted sample, nil when the line was not counted
	Done   bool    // the run has enough samples
	// BeforeWindow: the rate line came after the first non-zero rate and
	// before the first counted sample; the last such line starts the
	// backend-counter window (the comparison signals vhost-arcnet then).
	BeforeWindow bool
}

// Sampler applies the CPU-share filter to a run's rate lines.
type Sampler struct {
	cfg      FilterConfig
	mshare   int // MinShare, per mille
	n, first int
	tFirst   time.Duration
	prev     Reading
	prevDT   time.Duration // 0: unknown (fewer than two lines before)
	Samples  []Sample
	Clean    int
	cleanDur time.Duration
	totalDur time.Duration
}

// NewSampler returns a sampler for one run.
func NewSampler(cfg FilterConfig) *Sampler {
	return &Sampler{cfg: cfg, mshare: int(cfg.MinShare*1000 + 1e-9)}
}

// Lines is the number of rate lines added so far.
func (s *Sampler) Lines() int { return s.n }

// perMille is d as a share of dt, per mille (in microseconds, as the
// shell script computed it).
func perMille(d, dt time.Duration) int {
	return int(d.Microseconds() * 1000 / dt.Microseconds())
}

// Add takes one rate line's rate and the /proc reading taken when it was read.
//
// A sample is clean when the frontend's forwarding thread was on its CPU for
// at least MinShare of the interval, the backend too (or, not busy, waited
// at most 1-MinShare), and the interval differs by at most 25 % from the
// previous one: the shares are measured between two reads of the log, and
// when the reader was held up (a late read, then several lines at once) the
// interval is not testpmd's period and the shares mean nothing.
func (s *Sampler) Add(pps uint64, r Reading) Step {
	var st Step
	s.n++
	if s.first == 0 && pps > 0 {
		s.first, s.tFirst = s.n, r.At
	}
	var dt time.Duration
	if s.n > 1 {
		dt = r.At - s.prev.At
	}
	if s.first > 0 && s.n > s.first && r.At-s.tFirst >= s.cfg.Warmup {
		smp := Sample{N: s.n, PPS: pps, DT: dt}
		s.totalDur += dt
		ok := dt.Microseconds() > 0 && s.prevDT > 0 && dt*4 >= s.prevDT*3 && dt*4 <= s.prevDT*5
		if dt.Microseconds() > 0 {
			smp.FE = perMille(r.FeRun-s.prev.FeRun, dt)
			smp.BE = perMille(r.BeRun-s.prev.BeRun, dt)
			smp.Wait = max(0, perMille(r.BeWait-s.prev.BeWait+r.Steal-s.prev.Steal, dt))
		}
		if smp.FE < s.mshare {
			ok = false
		}
		if s.cfg.BusyBackend {
			ok = ok && smp.BE >= s.mshare
		} else {
			ok = ok && smp.Wait <= 1000-s.mshare
		}
		if ok {
			smp.Clean = true
			s.Clean++
			s.cleanDur += dt
		}
		s.Samples = append(s.Samples, smp)
		st.Sample = &smp
		if s.cfg.Filter {
			st.Done = s.cleanDur >= s.cfg.Want || s.totalDur >= s.cfg.Max
		} else {
			st.Done = s.totalDur >= s.cfg.Want
		}
	}
	st.BeforeWindow = s.first > 0 && len(s.Samples) == 0
	s.prev, s.prevDT = r, dt
	return st
}

// Run flags: how a run's figure was made.
const (
	Filtered   = "filtered"   // median of the clean samples
	Unfiltered = "unfiltered" // median of all samples (none was clean, or no filtering)
	Failed     = "failed"     // the backend did not come up
)

// RunResult is the figure of one run. NaN stands for NA.
type RunResult struct {
	Mpps         float64 // median rate, rounded to 3 decimals
	CtrMpps      float64 // the backend's own counters over the window (arcnet), 3 decimals
	Clean, Total int     // clean / all samples
	FE, BE, Wait float64 // median shares (0..1, 2 decimals) of the samples the figure uses; 0 without samples
	Flag         string
	NoSamples    bool
	C2C          time.Duration // cache line round trip between the two CPUs before the run (C2CRoundTrip); 0: not measured
}

// Result is the run's figure: the median of its clean samples, or of all
// of them when none was clean (or filter is off).
func (s *Sampler) Result(filter bool) RunResult {
	res := RunResult{Clean: s.Clean, Total: len(s.Samples), Flag: Filtered, CtrMpps: math.NaN()}
	use := func(x Sample) bool { return x.Clean }
	if !filter || s.Clean == 0 {
		res.Flag = Unfiltered
		use = func(Sample) bool { return true }
	}
	var pps, fe, be, wait []float64
	for _, x := range s.Samples {
		if use(x) {
			pps = append(pps, float64(x.PPS))
			fe = append(fe, float64(x.FE))
			be = append(be, float64(x.BE))
			wait = append(wait, float64(x.Wait))
		}
	}
	if len(pps) == 0 {
		res.Mpps, res.NoSamples = math.NaN(), true
		return res
	}
	res.Mpps = round(median(pps)/1e6, 3)
	res.FE = round(median(fe)/1000, 2)
	res.BE = round(median(be)/1000, 2)
	res.Wait = round(median(wait)/1000, 2)
	return res
}

// FailedRun is the result of a run whose backend did not come up.
func FailedRun() RunResult {
	return RunResult{Mpps: math.NaN(), CtrMpps: math.NaN(), Flag: Failed, NoSamples: true}
}

func round(x float64, decimals int) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', decimals, 64), 64)
	return v
}

// median of vs (the mean of the two middle ones for an even count); NaN if empty.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := (len(s) + 1) / 2
	if len(s)%2 == 1 {
		return s[m-1]
	}
	return (s[m-1] + s[m]) / 2
}

// stats3 is the median, min and max of vs without NaNs (median rounded to
// 3 decimals), NaNs when none is left.
func stats3(vs []float64) (med, lo, hi float64) {
	var s []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	return round(median(s), 3), slices.Min(s), slices.Max(s)
}

// Runs are the runs of one case and one backend, in order.
type Runs []RunResult

// Figure is the median, min and max over the filtered runs, or over all
// runs when none was filtered.
func (rs Runs) Figure() (med, lo, hi float64) {
	var f, all []float64
	for _, r := range rs {
		all = append(all, r.Mpps)
		if r.Flag == Filtered {
			f = append(f, r.Mpps)
		}
	}
	if len(f) == 0 {
		f = all
	}
	return stats3(f)
}

// Ctr is the median of the runs' backend-counter rates.
func (rs Runs) Ctr() float64 {
	var v []float64
	for _, r := range rs {
		v = append(v, r.CtrMpps)
	}
	m, _, _ := stats3(v)
	return m
}

// CleanString is "clean/all" samples over the runs.
func (rs Runs) CleanString() string {
	c, t := 0, 0
	for _, r := range rs {
		c += r.Clean
		t += r.Total
	}
	return fmt.Sprintf("%d/%d", c, t)
}

// CPUString is the runs' median frontend/backend CPU shares, "fe/be,...".
func (rs Runs) CPUString() string {
	var parts []string
	for _, r := range rs {
		if r.NoSamples {
			parts = append(parts, "0/0")
			continue
		}
		parts = append(parts, fmt.Sprintf("%.2f/%.2f", r.FE, r.BE))
	}
	return strings.Join(parts, ",")
}

// Fmt formats x with decimals, or "NA" for NaN.
func Fmt(x float64, decimals int) string {
	if math.IsNaN(x) {
		return "NA"
	}
	return strconv.FormatFloat(x, 'f', decimals, 64)
}

func ratio(a, d float64) float64 {
	if math.IsNaN(a) || math.IsNaN(d) || d == 0 {
		return math.NaN()
	}
	return a / d
}

// CaseLine is the result line of one case and arcnet mode: name is the case
// (f2b-64, f2b-64-poll, ...), arcnet nil when vhost-arcnet did not run
// (its columns are NA), mem the memory type.
//
//	case=f2b-64 arcnet_mpps=.. dpdk_mpps=.. arcnet_gbps=.. dpdk_gbps=.. ratio=.. ratio_of_max=..
//	arcnet_ctr_mpps=.. arcnet_range=MIN..MAX dpdk_range=MIN..MAX arcnet_clean=C/N dpdk_clean=C/N
//	arcnet_cpu_fe/be=FE/BE,.. dpdk_cpu_fe/be=FE/BE,.. mem=nohuge
func CaseLine(name string, size int, arcnet, dpdk Runs, mem string) string {
	a, amin, amax := math.NaN(), math.NaN(), math.NaN()
	actr, aclean, acpu := math.NaN(), "0/0", "NA"
	if arcnet != nil {
		a, amin, amax = arcnet.Figure()
		actr, aclean, acpu = arcnet.Ctr(), arcnet.CleanString(), arcnet.CPUString()
	}
	d, dmin, dmax := dpdk.Figure()
	gbps := func(mpps float64) string { return Fmt(mpps*float64(size)*8/1000, 2) }
	return fmt.Sprintf("case=%s arcnet_mpps=%s dpdk_mpps=%s arcnet_gbps=%s dpdk_gbps=%s ratio=%s"+
		" ratio_of_max=%s arcnet_ctr_mpps=%s arcnet_range=%s..%s dpdk_range=%s..%s arcnet_clean=%s dpdk_clean=%s"+
		" arcnet_cpu_fe/be=%s dpdk_cpu_fe/be=%s mem=%s",
		name, Fmt(a, 3), Fmt(d, 3), gbps(a), gbps(d), Fmt(ratio(a, d), 2),
		Fmt(ratio(amax, dmax), 2), Fmt(actr, 3), Fmt(amin, 3), Fmt(amax, 3), Fmt(dmin, 3), Fmt(dmax, 3),
		aclean, dpdk.CleanString(), acpu, dpdk.CPUString(), mem)
}
