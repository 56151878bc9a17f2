#!/bin/bash
# multiqueue.sh - 1 vs 2 queue pairs (issue 14), 64 B frames of 256 flows, guest->guest through the
# switch and through the loopback uplink, ROUNDS rounds interleaved (switch/1 switch/2 loopback/1
# loopback/2, again), each case FRAMES frames:
#   BENCH=inproc  (default) datapath's BenchmarkMultiQueue: backend and Go frontends in one process;
#   BENCH=process test/load's BenchmarkMultiQueueProcess: a vhost-arcnet process (--uplink none or
#                 loopback, --queue-pairs 1|2), Go frontends in the test process.
# Prints every run with the load average, then per case the median and min..max of every Mpps and
# CPU metric, and the pairs=2/pairs=1 ratio of the medians.
#
#   bench/multiqueue.sh
#   BENCH=process ROUNDS=9 FRAMES=2000000 bench/multiqueue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
FRAMES=${FRAMES:-1000000}
BENCH=${BENCH:-inproc}
case "$BENCH" in
inproc) pkg=./datapath/ name=MultiQueue ;;
process) pkg=./test/load/ name=MultiQueueProcess ;;
*) echo "BENCH must be inproc or process" >&2; exit 2 ;;
esac
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
nice -n 5 go test -c -o "$dir/bench.test" "$pkg"
if [ "$BENCH" = process ] && [ -z "${ARCNET_BIN:-}" ]; then
	nice -n 5 go build -o "$dir/vhost-arcnet" ./cmd/vhost-arcnet
	export ARCNET_BIN="$dir/vhost-arcnet"
fi
for r in $(seq "$ROUNDS"); do
	echo "# round $r: $(uptime | sed 's/.*load/load/')"
	(cd "$pkg" && "$dir/bench.test" -test.run '^$' -test.bench "^Benchmark$name\$" -test.benchtime "${FRAMES}x") |
		grep "^Benchmark$name/" | tee -a "$dir/runs"
done
awk -v name="$name" '
function median(list,   a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function span(list,   a, n, i, lo, hi) {
	n = split(list, a, " "); lo = a[1]; hi = a[1]
	for (i = 2; i <= n; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
	return sprintf("%.3g..%.3g", lo, hi)
}
{
	c = $1; sub("^Benchmark" name "/", "", c); sub(/-[0-9]+$/, "", c)
	if (!(c in seen)) { seen[c] = 1; cases[++nc] = c }
	for (i = 4; i <= NF; i++) if ($(i) ~ /Mpps|CPU/) {
		u = $(i); if (!(u in useen)) { useen[u] = 1; units[++nu] = u }
		v[c, u] = v[c, u] " " $(i - 1)
	}
}
END {
	print ""
	for (k = 1; k <= nc; k++) {
		c = cases[k]; line = sprintf("%-18s", c)
		for (j = 1; j <= nu; j++) { u = units[j]; m[c, u] = median(v[c, u]); line = line sprintf("  %s %.3f (%s)", u, m[c, u], span(v[c, u])) }
		print line
	}
	for (k = 1; k <= nc; k++) {
		c = cases[k]
		if (c !~ /pairs=2$/) continue
		base = c; sub(/pairs=2$/, "pairs=1", base)
		if (!(base in seen)) continue
		line = substr(c, 1, index(c, "/") - 1) ": pairs=2/pairs=1"
		for (j = 1; j <= nu; j++) { u = units[j]; if (m[base, u] > 0) line = line sprintf("  %s %.2fx", u, m[c, u] / m[base, u]) }
		print line
	}
}' "$dir/runs"
