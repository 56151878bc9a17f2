#!/bin/bash
# latency-rules.sh - when should a spinning worker yield its thread (virtio.Idle, issue 14)?
# Applies bench/latency-rules.patch (an experiment, not in main: ARCNET_YIELD_RULE picks the
# rule, see the patch's comment) to a throwaway worktree of REV, builds it once and runs
# test/load BenchmarkPingPong's eventfd cases (loopback and switch, frontends busy-polling
# and sleeping) with each rule in turn, in a fresh order each round; with HOG=N each round
# runs every rule a second time with N busy loops in sessions of their own (labels RULE+hogN),
# started before and stopped by PID after. Prints every run, then the median per case of each
# metric over the rounds with min..max, like bench/latency.sh.
# Usage: bench/latency-rules.sh [ROUNDS [BENCHTIME [REV]]]
# (defaults: 5, 3000x, HEAD; RULES="never call crowd late pair nrrun" to choose the rules;
# the patch also has sleep).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
benchtime=${2:-3000x}
rev=${3:-HEAD}
rules=${RULES:-never call crowd late pair nrrun}
hog=${HOG:-0}
tmp=$(mktemp -d)
hogs=()
stop_hogs() {
	local p
	for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${hogs[@]}"; do wait "$p" 2>/dev/null || true; done
	hogs=()
}
trap 'stop_hogs; git worktree remove --force "$tmp/wt" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/wt" "$rev"
git -C "$tmp/wt" apply "$PWD/bench/latency-rules.patch"
(cd "$tmp/wt" && nice -n 5 go build -o "$tmp/arcnet" ./cmd/vhost-arcnet)
nice -n 5 go test -c -o "$tmp/load.test" ./test/load/
echo "rev: $(git rev-parse --short "$rev") + bench/latency-rules.patch; rules: $rules"
run() { # label rule
	(cd test/load && ARCNET_YIELD_RULE=$2 ARCNET_BIN=$tmp/arcnet "$tmp/load.test" -test.run '^$' \
		-test.bench 'PingPong/(loopback|switch)/eventfd/' -test.benchtime "$benchtime") 2>&1 |
		grep '^Benchmark' |
		sed "s/^BenchmarkPingPong\//$1 load=$(cut -d' ' -f1 /proc/loadavg) /" | tee -a "$tmp/all"
}
for r in $(seq "$rounds"); do
	order=$(printf '%s\n' $rules | shuf | tr '\n' ' ')
	echo "# round $r: $order"
	for rule in $order; do run "$rule" "$rule"; done
	if [ "$hog" -gt 0 ]; then
		for i in $(seq "$hog"); do
			setsid bash -c 'while :; do :; done' &
			hogs+=($!)
		done
		sleep 1
		for rule in $order; do run "$rule+hog$hog" "$rule"; done
		stop_hogs
	fi
done
echo "# medians over $rounds rounds (min..max)"
awk '
	BEGIN { nm = split("rtt-p50-us rtt-p99-us rtt-p99.9-us kicks/rtt be-cpu-us/rtt be-wait-us/rtt fe-wait-us/rtt be-busy-threads", order, " ") }
	{ key = $1 " " $3; keys[key] = 1
	  for (i = 5; i < NF; i += 2) { m = $(i + 1); k = key SUBSEP m; n[k]++; v[k, n[k]] = $i; } }
	function med(k,    i, j, t, a, c) {
		c = n[k]; for (i = 1; i <= c; i++) a[i] = v[k, i]
		for (i = 2; i <= c; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return sprintf("%s (%s..%s)", (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2, a[1], a[c])
	}
	END { for (key in keys) { line = key
		for (i = 1; i <= nm; i++) { m = order[i]; if ((key SUBSEP m) in n) line = line "  " m "=" med(key SUBSEP m) }
		print line } }' "$tmp/all" | sort -k2,2 -k1,1
