#!/bin/bash
# multiqueue.sh - 1 vs 2 queue pairs (issue 14): BenchmarkMultiQueue (datapath/multiqueue_bench_test.go,
# 64 B frames of 256 flows, in-process Go frontends, guest->guest through the switch and through the
# loopback uplink), ROUNDS rounds interleaved (switch/1 switch/2 loopback/1 loopback/2, again), each
# case FRAMES frames. Prints every run with the load average, then per case the median and min..max of
# Mpps, Mpps per CPU-second and CPUs used, and the pairs=2/pairs=1 ratio of the medians.
#
#   bench/multiqueue.sh            # ROUNDS=5 FRAMES=2000000
#   ROUNDS=9 FRAMES=4000000 bench/multiqueue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
FRAMES=${FRAMES:-2000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
nice -n 5 go test -c -o "$dir/datapath.test" ./datapath/
for r in $(seq "$ROUNDS"); do
	echo "# round $r: $(uptime | sed 's/.*load/load/')"
	"$dir/datapath.test" -test.run '^$' -test.bench 'MultiQueue' -test.benchtime "${FRAMES}x" |
		grep '^BenchmarkMultiQueue' | tee -a "$dir/runs"
done
awk '
function unit(u,   i) { for (i = 3; i <= NF; i++) if ($(i) == u) return $(i-1); return "" }
function median(list,   a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
function hi(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
{
	name = $1; sub(/^BenchmarkMultiQueue\//, "", name); sub(/-[0-9]+$/, "", name)
	if (!(name in mpps)) order[++n] = name
	mpps[name] = mpps[name] " " unit("Mpps"); cpus[name] = cpus[name] " " unit("CPUs")
	eff[name] = eff[name] " " unit("Mpps/CPU-s")
}
END {
	printf "\n%-18s %22s %24s %18s\n", "case", "Mpps med (min..max)", "Mpps/CPU-s med (min..max)", "CPUs med"
	for (i = 1; i <= n; i++) {
		c = order[i]; m[c] = median(mpps[c]); e[c] = median(eff[c])
		printf "%-18s %8.3f (%.3f..%.3f) %10.3f (%.3f..%.3f) %12.2f\n", c, m[c], lo(mpps[c]), hi(mpps[c]), e[c], lo(eff[c]), hi(eff[c]), median(cpus[c])
	}
	for (i = 1; i <= n; i++) {
		c = order[i]
		if (c ~ /pairs=2$/) { b = c; sub(/pairs=2$/, "pairs=1", b); if (b in m) printf "%s: pairs=2/pairs=1 = %.2fx Mpps, %.2fx Mpps/CPU-s\n", substr(c, 1, index(c, "/") - 1), m[c] / m[b], e[c] / e[b] }
	}
}' "$dir/runs"
