#!/bin/bash
# latency.sh - one frame in flight (test/load BenchmarkPingPong): vhost-arcnet built at OLD_REV
# against the working tree, interleaved round by round, and DPDK's net_vhost (dpdk-testpmd,
# root) in the same rounds; prints every run, then the median per case of each metric over
# the rounds with min..max. Usage: bench/latency.sh [OLD_REV [ROUNDS [BENCHTIME]]]
# (defaults: main, 5, 3000x). One test binary (the working tree's) drives both backends.
# HOG=N also runs every backend of each round a second time with N busy loops, each in a
# session (an autogroup) of its own like another user's process, started before and stopped
# by PID after (labels old+hogN, new+hogN, dpdk+hogN): the oversubscribed regime next to the
# machine as it is, in the same interleaved run.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-main}
rounds=${2:-5}
benchtime=${3:-3000x}
hog=${HOG:-0}
tmp=$(mktemp -d)
. bench/hogs.sh
trap 'stop_hogs; git worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/old" "$old"
(cd "$tmp/old" && nice -n 5 go build -o "$tmp/arcnet-old" ./cmd/vhost-arcnet)
nice -n 5 go build -o "$tmp/arcnet-new" ./cmd/vhost-arcnet
nice -n 5 go test -c -o "$tmp/load.test" ./test/load/
echo "old: $(git rev-parse --short "$old") new: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty)"
run() { # label bench-regex [ARCNET_BIN]
	local label=$1 re=$2 bin=${3:-}
	(cd test/load && ARCNET_BIN=$bin "$tmp/load.test" -test.run '^$' -test.bench "$re" \
		-test.benchtime "$benchtime") 2>&1 | grep '^Benchmark' |
		sed "s/^BenchmarkPingPong\//$label load=$(cut -d' ' -f1 /proc/loadavg) /" | tee -a "$tmp/all"
}
for r in $(seq "$rounds"); do
	echo "# round $r"
	run old 'PingPong/(loopback|switch)/' "$tmp/arcnet-old"
	run new 'PingPong/(loopback|switch)/' "$tmp/arcnet-new"
	run dpdk 'PingPong/dpdk/'
	if [ "$hog" -gt 0 ]; then
		start_hogs "$hog"
		run "old+hog$hog" 'PingPong/(loopback|switch)/' "$tmp/arcnet-old"
		run "new+hog$hog" 'PingPong/(loopback|switch)/' "$tmp/arcnet-new"
		run "dpdk+hog$hog" 'PingPong/dpdk/'
		stop_hogs
	fi
done
echo "# medians over $rounds rounds (min..max)"
awk -f bench/pingpong-medians.awk "$tmp/all" | sort -k2,2 -k1,1
