#!/bin/bash
# perf-arcnet.sh [CASE] [SECONDS] [OUT]: a call-graph profile of the
# vhost-arcnet backend (the work tree's, event mode) while bench/vs-dpdk.sh
# runs CASE (default loop-64): perf record -g on the backend's pid for
# SECONDS (default 5) once it runs, then perf report --no-children of the
# top symbols into OUT and their callers into OUT.graph (default /tmp/perf-arcnet-CASE.txt). Needs what
# vs-dpdk needs, and perf.
set -eu
case=${1:-loop-64}
secs=${2:-5}
out=${3:-/tmp/perf-arcnet-$case.txt}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$top" && go build -o "$tmp/vhost-arcnet" ./cmd/vhost-arcnet && go build -o "$tmp/vs-dpdk" ./test/dpdk/cmd/vs-dpdk)
"$tmp/vs-dpdk" -cases "$case" -modes event -rounds 1 -arcnet-bin "$tmp/vhost-arcnet" -work "$tmp/w" "$((secs + 6))" >"$tmp/vs.txt" 2>&1 &
vs=$!
pid=
for _ in $(seq 1200); do
	for p in $(pgrep -x vhost-arcnet || true); do
		if [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$tmp/vhost-arcnet" ]; then
			pid=$p
		fi
	done
	[ -n "$pid" ] && break
	sleep 0.1
done
[ -n "$pid" ] || { echo "backend did not start" >&2; wait "$vs"; exit 1; }
sleep 3 # connect and warm up
perf record -g -o "$tmp/perf.data" -p "$pid" -- sleep "$secs" 2>/dev/null
wait "$vs" || true
grep -v '^#' "$tmp/vs.txt" | head -5
perf report -i "$tmp/perf.data" --no-children --stdio -g none --percent-limit 0.5 2>/dev/null | grep -v '^$' >"$out"
perf report -i "$tmp/perf.data" --no-children --stdio -G --percent-limit 2 2>/dev/null | grep -v '^$' >"$out.graph"
echo "profile: $out (call graphs: $out.graph)"
