#!/bin/sh
# nat-ab.sh OLD [ROUNDS] [BENCH-REGEX] [BENCHTIME]: the nat package's
# benchmarks at commit OLD and at the work tree, interleaved (old new old
# new ...) in one run, each binary on the same machine state; prints every
# figure and the median per benchmark and side of cpu-Mpps (BenchmarkTranslate*)
# or cpu-flows/s (BenchmarkNewFlows*), the rates per CPU-second of the
# process. Benchmark files the old commit lacks (bench_churn_test.go) are
# copied into its tree first, so both sides run the same benchmarks. With
# NAT_AB_HARNESS=work the work tree's bench_test.go replaces the old one
# too, so that both sides also use the same packet generator (it lost a
# division per packet in 2026-12; bench_test.go must compile against the
# old engine).
set -eu
old=$1
rounds=${2:-5}
re=${3:-'BenchmarkTranslate$|BenchmarkNewFlows'}
bt=${4:-1s}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$top" worktree add --detach "$tmp/old" "$old" >/dev/null 2>&1
for f in bench_churn_test.go; do
	[ -e "$tmp/old/nat/$f" ] || cp "$top/nat/$f" "$tmp/old/nat/"
done
if [ "${NAT_AB_HARNESS:-}" = work ]; then
	cp "$top/nat/bench_test.go" "$tmp/old/nat/"
fi
(cd "$tmp/old" && go test -c -o "$tmp/old.test" ./nat)
(cd "$top" && go test -c -o "$tmp/new.test" ./nat)
echo "# old $old, new: work tree at $(git -C "$top" rev-parse --short HEAD), harness: ${NAT_AB_HARNESS:-own}"
echo "# load before: $(uptime)"
for r in $(seq "$rounds"); do
	for side in old new; do
		"$tmp/$side.test" -test.run '^$' -test.bench "$re" -test.benchtime "$bt" 2>&1 |
			awk -v s="$side" '/^Benchmark/ { for (i = 2; i <= NF; i++) if ($i == "cpu-Mpps" || $i == "cpu-flows/s") print s, $1, $(i-1), $i }'
	done
done | tee "$tmp/all"
echo "# load after: $(uptime)"
echo "# medians (min..max) over $rounds rounds:"
sort -k2,2 -k1,1r -k3,3g "$tmp/all" | awk '
	function flush() { if (n) printf "%-56s %-4s %10.3f (%g..%g) %s\n", key, side, (n % 2 ? v[(n+1)/2] : (v[n/2]+v[n/2+1])/2), v[1], v[n], unit }
	{ if ($2 != key || $1 != side) { flush(); n = 0; key = $2; side = $1; unit = $4 } v[++n] = $3 }
	END { flush() }'
