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
. bench/hogs.sh
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
		start_hogs "$hog"
		for rule in $order; do run "$rule+hog$hog" "$rule"; done
		stop_hogs
	fi
done
echo "# medians over $rounds rounds (min..max)"
awk -f bench/pingpong-medians.awk "$tmp/all" | sort -k2,2 -k1,1
