#!/bin/sh
# netrx-ab.sh OLD [ROUNDS] [BENCH-REGEX] [BENCHTIME]: BenchmarkNetRXCrossCore
# (or another benchmark of the package: BENCH-REGEX)
# (virtio/bench_crosscore_test.go: the b2f receive path in one process, the
# driver on another thread) built at commit OLD and at the work tree, run
# interleaved (old new old new ...); prints every ns/op and, per benchmark
# and side, the sorted list. The benchmark is a two-thread race and a busy
# machine stretches some runs tenfold: compare the lowest values and the
# lower quartile, not means. The work tree's bench_crosscore_test.go is
# copied into the old tree (its newer-API cases live in another file).
set -eu
old=$1
rounds=${2:-15}
re=${3:-'CrossCore/mergeable/64B'}
bt=${4:-100000x}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$tmp/old" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$top" worktree add --detach "$tmp/old" "$old" >/dev/null 2>&1
cp "$top/virtio/bench_crosscore_test.go" "$top"/virtio/threadcpu_*_test.go "$tmp/old/virtio/"
# The packed ring benchmarks (BenchmarkPackedNetRXCrossCore,
# BenchmarkPackedWritePlain) too, where the work tree has them.
[ -e "$top/virtio/packed_bench_test.go" ] && cp "$top/virtio/packed_bench_test.go" "$tmp/old/virtio/"
if ! (cd "$tmp/old" && go test -c -o "$tmp/old.test" ./virtio >/dev/null 2>&1); then
	# The work tree's cross-core benchmark does not build in the old tree
	# (its other cases use a newer API): keep the old tree's own, and the
	# packed ring benchmarks, which use only old API.
	git -C "$tmp/old" checkout -q -- virtio
	git -C "$tmp/old" clean -qf virtio
	[ -e "$top/virtio/packed_bench_test.go" ] && cp "$top/virtio/packed_bench_test.go" "$tmp/old/virtio/"
	(cd "$tmp/old" && go test -c -o "$tmp/old.test" ./virtio)
fi
(cd "$top" && go test -c -o "$tmp/new.test" ./virtio)
echo "# load before: $(uptime)"
for r in $(seq "$rounds"); do
	for side in old new; do
		"$tmp/$side.test" -test.run '^$' -test.bench "$re" -test.benchtime "$bt" 2>&1 |
			awk -v s="$side" '/^Benchmark/ { print s, $1, $3 }'
	done
done | tee "$tmp/all"
echo "# load after: $(uptime)"
sort -k1,2 -k3g "$tmp/all" | awk '{ k = $1 " " $2; a[k] = a[k] " " $3; n[k]++ } END { for (k in a) print k, n[k] " runs, sorted ns/op:" a[k] }' | sort
