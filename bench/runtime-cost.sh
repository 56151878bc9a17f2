#!/bin/bash
# runtime-cost.sh OLD [ROUNDS] [CASES] [SECONDS]: what Go's scheduler costs the
# vhost-arcnet backend in event mode (issue 14: sysmon, P hand-offs, extra
# threads), vhost-arcnet built at commit OLD and at the work tree, interleaved
# (old new old new ...) under test/dpdk/cmd/vs-dpdk (one CPU for the backend,
# so GOMAXPROCS 1, as bench/arcnet-ab.sh measures it). For each run, while the
# frontend sends, two windows of SECONDS (default 5) on the backend's process:
#  1. CPU per thread from /proc/PID/task/TID/schedstat and context switches
#     from .../status; the thread right after the main one is Go's sysmon
#     (runtime.main starts it first; its current syscall, 35 = nanosleep or
#     202 = futex, is printed as a check). Prints the backend's CPU share,
#     sysmon's share of it, and per second: sysmon's wake-ups, every other
#     thread's context switches, and the syscalls ppoll (unix.Poll: a worker goes to
#     sleep on its kick), sched_yield (polite spin), futex (thread
#     wake-ups and sleeps of the runtime), epoll_pwait, nanosleep (sysmon's
#     ticks) and the process's sched:sched_switch (perf stat tracepoints).
#  2. uprobes (perf stat) on runtime.retake (a sysmon tick past its deep
#     sleep), runtime.handoffp (a P handed to another thread: retake of a P
#     in a syscall), runtime.startm (a thread woken or made to run a P),
#     runtime.newm (a thread created), runtime.exitsyscallTryGetP (a thread
#     back from a syscall found its P taken) and runtime.exitsyscallNoP (and
#     no idle P either: its goroutine queued, the thread parked). Uprobes
#     cost a trap each: this window counts, it does not time.
# The frontend's rate per backend CPU-second (be_cpu_mpps, as in
# bench/arcnet-ab.sh, median of the run's samples, both windows) is printed
# too. OLD_ENV / NEW_ENV: VAR=VALUE words put into the environment of that
# side's backend (e.g. NEW_ENV=GOMAXPROCS=2 to try a runtime setting on the
# same binary: OLD=HEAD). Needs root, perf, and what bench/vs-dpdk.sh needs.
set -euo pipefail
old=$1
rounds=${2:-2}
cases=${3:-"loop-64 b2f-64 f2b-copy-64"}
secs=${4:-5}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
grp=arcnetrt$$
cleanup() {
	if [ -w /sys/kernel/tracing/uprobe_events ]; then
		grep "^p:$grp/" /sys/kernel/tracing/uprobe_events 2>/dev/null | while read -r ev _; do
			echo "-:${ev#p:}" >>/sys/kernel/tracing/uprobe_events || true
		done
	fi
	git -C "$top" worktree remove --force "$tmp/src" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
git -C "$top" worktree add --detach "$tmp/src" "$old" >/dev/null 2>&1
# Each binary is named vhost-arcnet (pgrep finds the backend by name).
(cd "$tmp/src" && nice -n 5 go build -o "$tmp/old/vhost-arcnet" ./cmd/vhost-arcnet)
(cd "$top" && nice -n 5 go build -o "$tmp/new/vhost-arcnet" ./cmd/vhost-arcnet && nice -n 5 go build -o "$tmp/vs-dpdk" ./test/dpdk/cmd/vs-dpdk)
echo "old: $(git -C "$top" rev-parse --short "$old") ${OLD_ENV:-} new: $(git -C "$top" rev-parse --short HEAD)$(git -C "$top" diff --quiet || echo +dirty) ${NEW_ENV:-}"

fns="runtime.retake runtime.handoffp runtime.startm runtime.newm runtime.exitsyscallTryGetP runtime.exitsyscallNoP"
# probes BIN SIDE: uprobes on fns in BIN, named $grp/SIDE_FN; prints the
# perf -e list. File offset of a symbol = its address - its PT_LOAD's
# vaddr + that segment's file offset.
probes() {
	local bin=$1 side=$2 fn addr off evs=
	local o v sz
	for fn in $fns; do
		addr=$(go tool nm "$bin" | awk -v f="$fn" '$3 == f && ($2 == "T" || $2 == "t") { print $1 }' | head -1)
		[ -n "$addr" ] || { echo "no symbol $fn in $bin" >&2; continue; }
		off=
		while read -r o v sz; do
			if ((16#$addr >= v && 16#$addr < v + sz)); then
				off=$(printf '0x%x' $((16#$addr - v + o)))
			fi
		done < <(readelf -lW "$bin" | awk '$1 == "LOAD" { print $2, $3, $6 }')
		[ -n "$off" ] || { echo "no segment for $fn in $bin" >&2; continue; }
		echo "p:$grp/${side}_${fn#runtime.} $bin:$off" >>/sys/kernel/tracing/uprobe_events
		evs+="${evs:+,}$grp:${side}_${fn#runtime.}"
	done
	echo "$evs"
}
declare -A ev
ev[old]=$(probes "$tmp/old/vhost-arcnet" old)
ev[new]=$(probes "$tmp/new/vhost-arcnet" new)

# threads PID: "TID CPU_NS VOLUNTARY INVOLUNTARY" per thread.
threads() {
	local t
	for t in /proc/"$1"/task/*; do
		[ -r "$t/schedstat" ] || continue
		echo "${t##*/} $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null || echo 0) $(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v + 0, n + 0 }' "$t/status" 2>/dev/null || echo 0 0)"
	done
}

tps="syscalls:sys_enter_ppoll,syscalls:sys_enter_write,syscalls:sys_enter_sched_yield,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_nanosleep,sched:sched_switch"
measure() { # SIDE CASE
	local side=$1 c=$2 w="$tmp/w-$1-$2-$3" pid= p vs envs
	envs=${OLD_ENV:-}
	[ "$side" = new ] && envs=${NEW_ENV:-}
	# shellcheck disable=SC2086 # words
	env $envs "$tmp/vs-dpdk" -cases "$c" -modes event -rounds 1 -filter=false -arcnet-bin "$tmp/$side/vhost-arcnet" -work "$w" "$((2 * secs + 4))" >"$tmp/vs.txt" 2>&1 &
	vs=$!
	for _ in $(seq 300); do
		for p in $(pgrep -x vhost-arcnet || true); do
			[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$tmp/$side/vhost-arcnet" ] && pid=$p
		done
		[ -n "$pid" ] && break
		sleep 0.1
	done
	[ -n "$pid" ] || { echo "$side case=$c backend did not start"; wait "$vs" || true; return; }
	sleep 4 # connect, warm up
	local sysmon
	sysmon=$(ls /proc/"$pid"/task | sort -n | awk -v p="$pid" '$1 != p { print; exit }')
	threads "$pid" >"$tmp/t0"
	local t0 t1 sc
	t0=$(date +%s%N)
	perf stat -x, -e "$tps" -p "$pid" -o "$tmp/tp.txt" -- sleep "$secs" 2>/dev/null || true
	t1=$(date +%s%N)
	sc=$(cut -d' ' -f1 "/proc/$pid/task/$sysmon/syscall" 2>/dev/null || echo gone)
	threads "$pid" >"$tmp/t1"
	perf stat -x, -e "${ev[$side]}" -p "$pid" -o "$tmp/up.txt" -- sleep "$secs" 2>/dev/null || true
	wait "$vs" || true
	awk -v side="$side" -v c="$c" -v s="$sysmon" -v sc="$sc" -v dt=$(((t1 - t0) / 1000)) '
		FNR == NR { c0[$1] = $2; v0[$1] = $3; n0[$1] = $4; next }
		($1 in c0) {
			cpu = $2 - c0[$1]; tot += cpu; nt++
			if ($1 == s) { scpu = cpu; swake = $3 - v0[$1] }
			else { osw += $3 - v0[$1] + $4 - n0[$1] }
		}
		END {
			us = dt / 1e6
			printf "%s case=%s be_cpu=%.1f%% sysmon=%.1f%%_of_be threads=%d sysmon_wakeups/s=%.0f other_ctxsw/s=%.0f sysmon_syscall=%s\n",
				side, c, tot / 1e9 / us * 100, tot ? scpu / tot * 100 : 0, nt, swake / us, osw / us, sc
		}' "$tmp/t0" "$tmp/t1"
	for f in tp up; do
		awk -F, -v side="$side" -v c="$c" -v s="$secs" '
			$3 ~ /:/ { n = $3; sub(/^.*:(sys_enter_)?/, "", n); sub(/^(old|new)_/, "", n); l = l sprintf(" %s/s=%.0f", n, $1 / s) }
			END { if (l != "") print side " case=" c l }' "$tmp/$f.txt"
	done
	for f in "$w"/logs/*-event-r1-samples.txt; do
		[ -e "$f" ] || continue
		awk '$5 > 0 { printf "%.4f\n", $2 / $5 * 1000 / 1e6 }' "$f" | sort -g | awk -v side="$side" -v c="$c" '
			{ v[++n] = $1 } END { if (n) printf "%s case=%s be_cpu_mpps=%.2f samples=%d\n", side, c, n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2, n }'
	done
}
for r in $(seq "$rounds"); do
	for c in $cases; do
		for side in old new; do
			echo "# $side $c round $r: $(uptime)"
			measure "$side" "$c" "$r"
		done
	done
done
echo "# load after: $(uptime)"
