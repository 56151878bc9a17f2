#!/bin/bash
# alternate.sh CASE [SLOTS] [SECONDS] BACKEND...: one frontend, backends
# taking turns on it. A virtio_user frontend (dpdk-testpmd, server=1, on
# CPU 1) stays up for the whole run; each BACKEND in turn connects to its
# socket for SECONDS (default 12), SLOTS times over (default 3):
#   dpdk       DPDK 22.11's net_vhost (testpmd, client=1)
#   work       vhost-arcnet built from the work tree (--connect)
#   REV        vhost-arcnet built at git revision REV
# CASE as in vs-dpdk: f2b-SIZE, f2b-copy-SIZE, b2f-SIZE, loop-SIZE, with
# -packed for packed virtqueues (SIZE up to 1518).
#
# Why (issue 14): the test VM's two vCPUs move every few minutes between
# "close" and "far" (dpdk.C2CRoundTrip: 100-190 ns against 400 ns and
# more), every backend runs 2-3x slower far apart, and far has sub-modes
# that C2C does not tell apart; separate runs of vs-dpdk land in
# different modes and their ratios scatter. Here the frontend process, its
# memory and its CPU stay the same and the backends swap every few
# seconds, so the slots of one pass are compared in one mode.
#
# The figure is the frontend's own per-second counter, the same for every
# backend: Tx-pps (frames the ring took) for f2b and f2b-copy, Rx-pps
# (frames that came back or in) for loop and b2f. The first second with
# frames after a swap (the reconnect) and seconds without are left out.
# Prints per slot the backend, the C2C round trip when it started and when
# it ended (taken beside the running frontend, which holds CPU 1: higher
# than vs-dpdk's, about 900-1300 ns when far, 100-250 when close), the
# slot's mode (far or close at both ends, else mixed), the median rate and
# how many seconds it had (testpmd's stats thread shares the frontend's
# CPU: a line every 2 s or so); then per pass its mode (mixed unless all
# its slots agree) and the ratio of every backend to the first one; then,
# per mode, the median of those ratios. The modes differ in kind, not
# only in speed: the cost of a cache line between the CPUs dominates far
# apart, a backend's own cost per frame close together. Needs root,
# dpdk-testpmd, go.
set -eu
usage() { echo "usage: $0 CASE [SLOTS] [SECONDS] BACKEND... (BACKEND: dpdk | work | REV)" >&2; exit 2; }
[ $# -ge 2 ] || usage
cs=$1; shift
slots=3 secs=12
if [[ $1 =~ ^[0-9]+$ ]]; then slots=$1; shift; fi
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
[ $# -ge 1 ] || usage
packed=""
base=$cs
if [[ $cs == *-packed ]]; then packed=1; base=${cs%-packed}; fi
size=${base##*-}
dir=${base%-*}
[[ $size =~ ^[0-9]+$ ]] && [ "$size" -ge 60 ] && [ "$size" -le 1518 ] || { echo "size must be 60..1518: $cs" >&2; exit 2; }
key=Tx-pps
case $dir in
f2b) up=sink fe="--forward-mode=txonly --txpkts=$size" be="--forward-mode=rxonly" ;;
f2b-copy) up=sink-copy fe="--forward-mode=txonly --txpkts=$size" be="--forward-mode=rxonly" ;;
b2f) up="source --source-size $size" fe="--forward-mode=rxonly" be="--forward-mode=txonly --txpkts=$size" key=Rx-pps ;;
loop) up=loopback fe="--forward-mode=flowgen --txpkts=$((size + 4))" be="--forward-mode=io --port-topology=loop" key=Rx-pps ;;
*) echo "unknown case: $cs" >&2; exit 2 ;;
esac
vq=""; pr=""
if [ -n "$packed" ]; then vq=",packed_vq=1"; pr="--packed-rings"; fi

top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
fepid="" bepid=""
trees=()
cleanup() {
	for p in $bepid $fepid; do kill -INT "$p" 2>/dev/null || true; done
	sleep 1
	for p in $bepid $fepid; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for t in "${trees[@]}"; do git -C "$top" worktree remove --force "$t" >/dev/null 2>&1 || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
(cd "$top" && go build -o "$tmp/c2c" ./test/dpdk/cmd/c2c)
for b in "$@"; do
	case $b in
	dpdk) ;;
	work) [ -e "$tmp/bin-work" ] || (cd "$top" && go build -o "$tmp/bin-work" ./cmd/vhost-arcnet) ;;
	*)
		if [ ! -e "$tmp/bin-$b" ]; then
			git -C "$top" worktree add --detach "$tmp/src-$b" "$b" >/dev/null 2>&1
			trees+=("$tmp/src-$b")
			(cd "$tmp/src-$b" && go build -o "$tmp/bin-$b" ./cmd/vhost-arcnet)
		fi
		;;
	esac
done

sock=$tmp/vhost.sock
# shellcheck disable=SC2086
RUNTIME_DIRECTORY=$tmp taskset -c 1 stdbuf -oL dpdk-testpmd --lcores 0@1,1@1 --file-prefix=alt$$fe \
	--no-pci --no-telemetry --no-huge -m 512 --vdev "net_virtio_user0,path=$sock,queues=1,server=1$vq" -- \
	--stats-period=1 --total-num-mbufs=32768 $fe >"$tmp/fe.log" 2>&1 </dev/null &
fepid=$!
# The frontend waits for its first backend once its socket is there.
for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "frontend did not start:" >&2; tail "$tmp/fe.log" >&2; exit 1; }
echo "# $cs, $slots passes of $secs s per backend, $(uptime)"
: >"$tmp/marks"
for s in $(seq "$slots"); do
	for b in "$@"; do
		c2c=$("$tmp/c2c" 2>/dev/null || echo NA)
		if [ "$b" = dpdk ]; then
			# shellcheck disable=SC2086
			RUNTIME_DIRECTORY=$tmp taskset -c 0 stdbuf -oL dpdk-testpmd --lcores 0@0,1@0 --file-prefix=alt$$be \
				--no-pci --no-telemetry --no-huge -m 512 --vdev "net_vhost0,iface=$sock,queues=1,client=1" -- \
				--stats-period=1 --total-num-mbufs=32768 $be >"$tmp/be-$s-$b.log" 2>&1 </dev/null &
		else
			# shellcheck disable=SC2086
			taskset -c 0 "$tmp/bin-$b" --connect "$sock" --log-format json --log-level warn \
				--uplink $up $pr >"$tmp/be-$s-$b.log" 2>&1 &
		fi
		bepid=$!
		echo "start $s $b $(grep -c "$key" "$tmp/fe.log") $c2c" >>"$tmp/marks"
		sleep "$secs"
		echo "stop $s $b $(grep -c "$key" "$tmp/fe.log")" >>"$tmp/marks"
		kill -INT "$bepid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$bepid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$bepid" 2>/dev/null || true
		wait "$bepid" 2>/dev/null || true
		bepid=""
		# the mode at the slot's end, measured as at its start (the
		# backend gone, the frontend still holding CPU 1)
		echo "end $s $b $("$tmp/c2c" 2>/dev/null || echo NA)" >>"$tmp/marks"
	done
done
grep "$key" "$tmp/fe.log" | awk '{ print $2 }' >"$tmp/rates"
awk -v first="$1" '
	# median sorts v[1..n] in place (insertion sort: a few dozen values
	# at most) and returns its median, 0 when n is 0.
	function median(v, n,    i, j, x) {
		for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
		return n ? (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) : 0
	}
	FILENAME == ARGV[1] { rate[FNR] = $1; next }
	$1 == "start" { from = $4; c2c = $5; next }
	$1 == "end" {
		# A slot is far (or close) when the round trip says so at its
		# start and at its end (threshold 600 ns beside the frontend);
		# the mode can still change within it, but less often unseen.
		mode = (c2c ~ /^[0-9]+$/ && $4 ~ /^[0-9]+$/) ? (c2c >= 600 && $4 >= 600 ? "far" : (c2c < 600 && $4 < 600 ? "close" : "mixed")) : "NA"
		printf "pass=%d backend=%s c2c_ns=%s..%s mode=%s mpps=%s seconds=%d\n", $2, $3, c2c, $4, mode, last_n ? sprintf("%.3f", last_med) : "NA", last_n
		slotmode[$2, $3] = mode
		next
	}
	$1 == "stop" {
		n = 0; skipped = 0
		for (i = from + 1; i <= $4; i++) {
			if (rate[i] < 1000) continue
			if (!skipped) { skipped = 1; continue }
			v[++n] = rate[i] / 1e6
		}
		med = median(v, n)
		last_n = n; last_med = med
		m[$2, $3] = n ? med : 0
		if (!($2 in seen)) { seen[$2] = 1; passes[++np] = $2 }
		if (!($3 in known)) { known[$3] = 1; names[++nb] = $3 }
	}
	END {
		for (p = 1; p <= np; p++) {
			# the mode of the pass: that of all its slots, if they agree
			pm = slotmode[passes[p], names[1]]
			for (b = 2; b <= nb; b++) if (slotmode[passes[p], names[b]] != pm) pm = "mixed"
			line = "pass=" passes[p] " mode=" pm " ratio_to_" first ":"
			for (b = 1; b <= nb; b++) {
				a = m[passes[p], names[b]]; f = m[passes[p], first]
				r = a > 0 && f > 0 ? a / f : 0
				line = line " " names[b] "=" (r > 0 ? sprintf("%.2f", r) : "NA")
				if (r > 0) { k = pm SUBSEP names[b]; cnt[k]++; rs[k, cnt[k]] = r }
			}
			print line
		}
		# per mode and backend, the median of the passes ratios
		split("far close mixed", modes, " ")
		for (mi = 1; mi <= 3; mi++) for (b = 2; b <= nb; b++) {
			k = modes[mi] SUBSEP names[b]; n = cnt[k]
			if (!n) continue
			for (i = 1; i <= n; i++) v[i] = rs[k, i]
			med = median(v, n)
			printf "mode=%s %s/%s: median %.2f of %d passes (%.2f..%.2f)\n", modes[mi], names[b], first, med, n, v[1], v[n]
		}
	}' "$tmp/rates" "$tmp/marks"
echo "# load after: $(uptime)"
