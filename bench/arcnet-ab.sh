#!/bin/bash
# arcnet-ab.sh OLD [ROUNDS] [CASES] [SECONDS]: bench/vs-dpdk.sh (event mode)
# with vhost-arcnet built at commit OLD and at the work tree, interleaved
# (old new old new ...), each run measuring DPDK's net_vhost too. Prints
# every result line of vs-dpdk, tagged old/new, and per arcnet run the
# median over its samples of the frontend's packet rate per CPU-second of
# the backend (be_cpu_mpps: PPS / BE share, from the run's samples file),
# which a busy machine disturbs less than the wall-clock rate: compare
# old and new with it when the samples are not clean. Needs what
# bench/vs-dpdk.sh needs (root, dpdk-testpmd).
set -eu
old=$1
rounds=${2:-3}
cases=${3:-"b2f-64 loop-64"}
secs=${4:-5}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$tmp/src" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$top" worktree add --detach "$tmp/src" "$old" >/dev/null 2>&1
(cd "$tmp/src" && go build -o "$tmp/old" ./cmd/vhost-arcnet)
(cd "$top" && go build -o "$tmp/new" ./cmd/vhost-arcnet && go build -o "$tmp/vs-dpdk" ./test/dpdk/cmd/vs-dpdk)
for r in $(seq "$rounds"); do
	for side in old new; do
		w="$tmp/w-$side-$r"
		echo "# $side round $r: $(uptime)"
		"$tmp/vs-dpdk" -cases "$cases" -modes event -rounds 1 -arcnet-bin "$tmp/$side" -work "$w" "$secs" 2>/dev/null |
			sed "s/^/$side /"
		for f in "$w"/logs/*-event-r1-samples.txt; do
			[ -e "$f" ] || continue
			# Samples: N PPS CLEAN FE BE WAIT DT_US (shares per mille).
			awk '$5 > 0 { printf "%.4f\n", $2 / $5 * 1000 / 1e6 }' "$f" | sort -g |
				awk -v s="$side" -v c="$(basename "$f" -event-r1-samples.txt)" '
					{ v[++n] = $1 }
					END {
						if (n == 0) exit
						m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
						printf "%s case=%s be_cpu_mpps=%.2f samples=%d\n", s, c, m, n
					}'
		done
	done
done
echo "# load after: $(uptime)"
