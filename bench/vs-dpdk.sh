#!/bin/bash
# vs-dpdk.sh - vhost-arcnet against DPDK's own vhost-user backend, side by side, in one run.
#
# usage: bench/vs-dpdk.sh [SECONDS]        (SECONDS: measured seconds per run, default 5)
#
# The frontend is always DPDK's virtio_user (dpdk-testpmd --vdev net_virtio_user0,path=SOCK), a
# vhost-user driver that plays the guest without a VM. For every case it measures, interleaved
# (A B C  A B C ...), ROUNDS times:
#   A  DPDK:    net_vhost (dpdk-testpmd --vdev net_vhost0,iface=SOCK) as the backend
#   B  arcnet:  vhost-arcnet --socket SOCK (default, eventfd-driven mode)
#   C  arcnet:  vhost-arcnet --socket SOCK --poll (busy polling)
# Cases (CASES): f2b-SIZE = frontend -> backend: virtio_user txonly -> net_vhost rxonly | arcnet
#   --uplink sink;  b2f-SIZE = backend -> frontend: net_vhost txonly | arcnet --uplink source
#   --source-size SIZE -> virtio_user rxonly.  SIZE = frame bytes without the virtio header.
# Each process gets one CPU: testpmd with --lcores 0@C,1@C under taskset -c C (main lcore, worker
# and control threads on C), vhost-arcnet under taskset -c BE_CPU (GOMAXPROCS follows: 1).
# Both sides use the same memory type for the frontend's guest memory (the backend maps what the
# frontend gives it): --no-huge (4 KiB pages, memfd) by default, MEM=huge for 2 MiB hugepages.
#
# What is measured: every stats period (--stats-period=1; testpmd's own timer makes that 2 s on
# some VMs, this one included) testpmd prints its port's packet rate over the exact interval.
# DPDK pair: the receiver's Rx-pps (net_vhost for f2b, virtio_user for b2f). arcnet f2b: the
# sender's Tx-pps (virtio_user counts what it put into the ring; a full ring is a TX drop, so in
# steady state that is the rate the backend consumes), cross-checked with vhost-arcnet's own
# counters: SIGUSR1 at the start and at the end of the measured window, diff of the two "port
# stats" rx_packets = arcnet_ctr_mpps. arcnet b2f: virtio_user's Rx-pps (tx_packets diff as
# arcnet_ctr_mpps).
# Samples that end less than WARMUP seconds after the first non-zero one are discarded. A sample
# is "clean" when the frontend's forwarding thread was on its CPU >= MINSHARE of the interval and
# the backend too (busy pollers: DPDK's worker thread; arcnet --poll: all its threads summed); an
# eventfd-driven arcnet sleeps by design, so for it "clean" means its threads waited on the run
# queue, plus the hypervisor's steal time on its CPU, <= 1-MINSHARE of the interval. A sample
# whose interval, as this script saw it, differs by more than 25 % from the previous one is not
# clean either (the script itself was held up: the shares mean nothing then). A run ends when its
# clean samples cover SECONDS, or all of them MAXSEC; its figure is the median of its clean
# samples ("filtered"), or of all its samples when none was clean ("unfiltered"). A case's figure
# is the median over its filtered runs, or over all its runs when none was filtered: check
# arcnet_clean / dpdk_clean (clean/all samples) and the CPU shares before trusting a ratio.
# Gbps = Mpps * SIZE * 8 (frame bytes only, no preamble/IFG/CRC).
#
# Output: one line per case and arcnet mode on stdout (default mode, then "-poll"):
#   case=f2b-64 arcnet_mpps=.. dpdk_mpps=.. arcnet_gbps=.. dpdk_gbps=.. ratio=.. [details]
#   case=f2b-64-poll arcnet_mpps=.. dpdk_mpps=.. ...
# details: ratio_of_max (best run against best run: on this VM whole runs of either backend
# sometimes land in a slow mode, 2x apart, while the samples inside a run agree; compare the two
# ratios, raise ROUNDS when they differ), arcnet_ctr_mpps (backend counters), min..max over the
# runs used, clean/all samples, median CPU shares fe/be per run.
# Caveat, f2b: DPDK's net_vhost copies every frame into an mbuf before rxonly frees it, while
# arcnet's sink uplink counts frames without reading their payload; at 1518 B f2b the arcnet
# figure is mostly virtio_user's own transmit ceiling (txonly does not write payload either). Progress goes to stderr; per-run logs and results.txt stay in WORK.
#
# environment knobs (all optional):
#   CASES       default "f2b-64 f2b-1518 b2f-64 b2f-1518"
#   MODES       arcnet modes, default "event poll" ("event" = default mode, "poll" = --poll)
#   ROUNDS      default 3
#   MEM         nohuge (default: --no-huge, 4 KiB pages, memfd) | huge (2 MiB hugetlbfs at HUGEDIR,
#               --single-file-segments; nr_hugepages is raised by what is missing, and lowered
#               by as much again at the end)
#   MEM_MB      testpmd memory per process (-m), default 512
#   HUGEDIR     default $WORK/huge (mounted, and unmounted at the end, by this script)
#   WARMUP      seconds of samples discarded after the first non-zero one, default 2
#   MINSHARE    default 0.95; FILTER=0 counts every sample (no CPU-share filtering, still reported)
#   MAXSEC      max seconds of samples per run after warm-up, default 3*SECONDS
#   BE_CPU / FE_CPU  CPUs for backend / frontend, default 0 / 1
#   VIRTIO_ARGS extra virtio_user devargs, e.g. ",mrg_rxbuf=0" ",in_order=0" (both backends)
#   VHOST_ARGS  extra net_vhost devargs
#   EAL_FE / EAL_BE  extra EAL args, e.g. "--log-level=pmd.net.virtio.*:debug"
#   ARCNET_BIN  vhost-arcnet binary (default: go build ./cmd/vhost-arcnet into WORK)
#   ARCNET_ARGS extra vhost-arcnet flags
#   DPDK_ONLY=1 skip vhost-arcnet (arcnet columns NA)
#   WORK        work directory (logs, sockets, DPDK runtime dir), default: a new /tmp/vs-dpdk.XXXXXX
#   KEEP=0      remove WORK at the end (default 1: keep the logs, path printed on stderr)
#   VERBOSE=1   per-sample lines on stderr
# needs: root, dpdk-testpmd (Debian: dpdk), taskset, go (unless ARCNET_BIN or DPDK_ONLY=1).
set -u

DUR=${1:-5}
CASES=${CASES:-f2b-64 f2b-1518 b2f-64 b2f-1518}
MODES=${MODES:-event poll}
ROUNDS=${ROUNDS:-3}
MEM=${MEM:-nohuge}
MEM_MB=${MEM_MB:-512}
WARMUP=${WARMUP:-2}
MINSHARE=${MINSHARE:-0.95}
FILTER=${FILTER:-1}
MAXSEC=${MAXSEC:-$((3 * DUR))}
BE_CPU=${BE_CPU:-0}
FE_CPU=${FE_CPU:-1}
VIRTIO_ARGS=${VIRTIO_ARGS:-}
VHOST_ARGS=${VHOST_ARGS:-}
EAL_FE=${EAL_FE:-}
EAL_BE=${EAL_BE:-}
ARCNET_ARGS=${ARCNET_ARGS:-}
DPDK_ONLY=${DPDK_ONLY:-0}
KEEP=${KEEP:-1}
VERBOSE=${VERBOSE:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "vs-dpdk: $*" >&2; exit 1; }
log() { echo "vs-dpdk: $*" >&2; }

case $DUR in '' | *[!0-9]*) die "SECONDS must be a positive integer, got '$DUR'" ;; esac
[ "$DUR" -gt 0 ] || die "SECONDS must be > 0"
[ "$(id -u)" = 0 ] || die "must run as root (DPDK vhost-user, taskset, hugepages)"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (Debian 12: apt-get install dpdk)"
command -v taskset >/dev/null || die "taskset not found (util-linux)"

WORK=${WORK:-$(mktemp -d /tmp/vs-dpdk.XXXXXX)}
mkdir -p "$WORK/logs" "$WORK/rt" || die "cannot create $WORK"
LOGDIR=$WORK/logs
RESULTS=$LOGDIR/results.txt
SOCK=$WORK/vhost.sock
export RUNTIME_DIRECTORY=$WORK/rt # DPDK's runtime dir (mp socket, config) goes here, not /var/run
TAG=$$
HUGEDIR=${HUGEDIR:-$WORK/huge}
MOUNTED_HUGE=0
HUGE_ADDED=0 # 2 MiB pages this script added to nr_hugepages (given back at the end)
BEPID=""
FEPID=""

cleanup() {
	[ -n "$FEPID" ] && kill -KILL "$FEPID" 2>/dev/null
	[ -n "$BEPID" ] && kill -KILL "$BEPID" 2>/dev/null
	rm -rf "$WORK/rt" "$SOCK"
	if [ "$MEM" = huge ]; then
		rm -f "$HUGEDIR"/vsdpdk"$TAG"*
		[ "$MOUNTED_HUGE" = 1 ] && umount "$HUGEDIR" 2>/dev/null
		if [ "$HUGE_ADDED" -gt 0 ]; then # give back what we added, not what others hold
			cur=$(cat /proc/sys/vm/nr_hugepages)
			[ "$cur" -ge "$HUGE_ADDED" ] && echo $((cur - HUGE_ADDED)) >/proc/sys/vm/nr_hugepages
		fi
	fi
	if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else log "logs: $LOGDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$MEM" = huge ]; then
	mkdir -p "$HUGEDIR"
	if ! mountpoint -q "$HUGEDIR"; then
		mount -t hugetlbfs -o pagesize=2M nodev "$HUGEDIR" || die "cannot mount hugetlbfs at $HUGEDIR"
		MOUNTED_HUGE=1
	fi
	need=$((2 * MEM_MB / 2 + 16)) # 2 MiB pages for both testpmd processes, plus slack
	free=$(awk '/HugePages_Free/{print $2}' /proc/meminfo)
	if [ "$free" -lt "$need" ]; then
		cur=$(cat /proc/sys/vm/nr_hugepages)
		echo $((cur + need - free)) >/proc/sys/vm/nr_hugepages
		HUGE_ADDED=$((need - free))
		free=$(awk '/HugePages_Free/{print $2}' /proc/meminfo)
		[ "$free" -ge "$need" ] || die "only $free free 2 MiB hugepages, need $need"
	fi
	MEMFLAGS="-m $MEM_MB --huge-dir $HUGEDIR --single-file-segments"
elif [ "$MEM" = nohuge ]; then
	MEMFLAGS="--no-huge -m $MEM_MB"
else
	die "MEM must be nohuge or huge"
fi

# ---- vhost-arcnet binary ----------------------------------------------------------------------
ARCNET_OK=0
if [ "$DPDK_ONLY" != 1 ]; then
	if [ -n "${ARCNET_BIN:-}" ]; then
		if [ -x "$ARCNET_BIN" ]; then ARCNET_OK=1; else log "ARCNET_BIN=$ARCNET_BIN is not executable"; fi
	else
		ARCNET_BIN=$WORK/vhost-arcnet
		if (cd "$ROOT" && go build -o "$ARCNET_BIN" ./cmd/vhost-arcnet) >"$LOGDIR/build.log" 2>&1; then
			ARCNET_OK=1
		else
			log "go build ./cmd/vhost-arcnet failed (arcnet columns will be NA):"
			tail -5 "$LOGDIR/build.log" >&2
		fi
	fi
fi

# ---- helpers (used inside the sampling loop: bash builtins only, no forks, so that the loop
# ---- itself does not preempt a forwarding thread and show up as lost CPU share) ---------------

# worker_tid PID: the thread id of testpmd's forwarding lcore 1 ("rte-worker-1"), or nothing.
worker_tid() {
	local t c
	for t in /proc/"$1"/task/*; do
		{ read -r c <"$t/comm"; } 2>/dev/null || continue
		[ "$c" = rte-worker-1 ] && {
			echo "${t##*/}"
			return
		}
	done
}

# sched PID [TID]: R_RUN, R_WAIT = on-CPU and run-queue wait time in us, of thread TID or summed
# over every thread of PID (/proc/PID/task/TID/schedstat: run ns, wait ns, timeslices).
sched() {
	local f a b
	R_RUN=0
	R_WAIT=0
	for f in /proc/"$1"/task/${2:-*}/schedstat; do
		{ read -r a b _ <"$f"; } 2>/dev/null || continue
		R_RUN=$((R_RUN + a / 1000))
		R_WAIT=$((R_WAIT + b / 1000))
	done
}

# steal CPU: R_STEAL = hypervisor steal time of CPU in us (/proc/stat, USER_HZ=100 ticks).
steal() {
	local l
	R_STEAL=0
	while read -r l; do
		case $l in "cpu$1 "*)
			# shellcheck disable=SC2086 # split the line into fields on purpose
			set -- $l
			R_STEAL=$((${9} * 10000))
			return
			;;
		esac
	done </proc/stat
}

# frame-size dependent testpmd args (as DPDK's own tests: big frames need big single-segment mbufs
# on the sender, --mbuf-size before --txpkts, and a scattering virtio_user receiver).
size_args() {
	local size=$1 mbuf
	TXARGS="--txpkts=$size"
	RXARGS=""
	BIGARGS=""
	if [ "$size" -gt 1518 ]; then
		mbuf=$(((size + 128 + 63) / 64 * 64))
		TXARGS="--mbuf-size=$mbuf --txpkts=$size"
		RXARGS="--enable-scatter"
		BIGARGS="--max-pkt-len=$((size + 18))"
	fi
}

wait_gone() { # wait_gone PID: up to 5 s, then SIGKILL

	for _ in $(seq 50); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# run_one KIND DIR SIZE ROUND: KIND = dpdk | event | poll. Appends one line to RESULTS and sets
# RUN_LINE: "mpps ctr_mpps clean total fe_share be_share be_wait flag".
RUNSEQ=0
run_one() {
	local kind=$1 dir=$2 size=$3 round=$4 id be_cmd fe_cmd be_mode fe_mode key rxlog uplink poll
	RUNSEQ=$((RUNSEQ + 1))
	id=$dir-$size-$kind-r$round
	local belog=$LOGDIR/$id-be.log felog=$LOGDIR/$id-fe.log samp=$LOGDIR/$id-samples.txt
	size_args "$size"
	local APP="--stats-period=1 --total-num-mbufs=32768 $BIGARGS"
	local EAL="--no-pci --no-telemetry $MEMFLAGS"
	case $dir in
	f2b) be_mode=rxonly fe_mode=txonly uplink=sink ;;
	b2f) be_mode=txonly fe_mode=rxonly uplink=source ;;
	esac
	local fe_sz be_sz=""
	if [ "$fe_mode" = txonly ]; then fe_sz=$TXARGS; else fe_sz=$RXARGS be_sz=$TXARGS; fi
	if [ "$kind" = dpdk ]; then
		be_cmd="taskset -c $BE_CPU dpdk-testpmd --lcores 0@$BE_CPU,1@$BE_CPU --file-prefix=vsdpdk${TAG}be$RUNSEQ $EAL $EAL_BE --vdev net_vhost0,iface=$SOCK,queues=1$VHOST_ARGS -- $APP --forward-mode=$be_mode $be_sz"
	else
		poll=""
		[ "$kind" = poll ] && poll=--poll
		be_cmd="taskset -c $BE_CPU $ARCNET_BIN --socket $SOCK --uplink $uplink --log-format json --log-level info $poll $ARCNET_ARGS"
		[ "$dir" = b2f ] && be_cmd="$be_cmd --source-size $size"
	fi
	fe_cmd="taskset -c $FE_CPU dpdk-testpmd --lcores 0@$FE_CPU,1@$FE_CPU --file-prefix=vsdpdk${TAG}fe$RUNSEQ $EAL $EAL_FE --vdev net_virtio_user0,path=$SOCK,queues=1$VIRTIO_ARGS -- $APP --forward-mode=$fe_mode $fe_sz"
	# where the figure is read: the receiver's Rx-pps, except arcnet f2b: the sender's Tx-pps
	if [ "$dir" = b2f ]; then
		rxlog=$felog key=Rx-pps:
	elif [ "$kind" = dpdk ]; then
		rxlog=$belog key=Rx-pps:
	else
		rxlog=$felog key=Tx-pps:
	fi
	printf 'BE: %s\nFE: %s\n' "$be_cmd" "$fe_cmd" >"$LOGDIR/$id-cmd.txt"
	RUN_LINE="NA NA 0 0 0 0 0 failed"

	rm -f "$SOCK"
	: >"$belog"
	: >"$felog" # created here: the sampler opens the receiver's log before testpmd writes to it
	# shellcheck disable=SC2086 # command lines are split into words on purpose
	stdbuf -oL $be_cmd </dev/null >"$belog" 2>&1 &
	BEPID=$!
	local ready=0
	for _ in $(seq 300); do
		kill -0 "$BEPID" 2>/dev/null || break
		if [ "$kind" = dpdk ]; then
			[ -S "$SOCK" ] && ready=1
		else
			grep -q '"msg":"listening"' "$belog" && [ -S "$SOCK" ] && ready=1
		fi
		[ $ready = 1 ] && break
		sleep 0.1
	done
	if [ $ready = 0 ]; then
		log "$id: backend did not come up; $belog:"
		tail -5 "$belog" >&2
		kill -INT "$BEPID" 2>/dev/null
		wait_gone "$BEPID"
		BEPID=""
		echo "$id FAILED backend" >>"$RESULTS"
		return 1
	fi
	# shellcheck disable=SC2086
	stdbuf -oL $fe_cmd </dev/null >"$felog" 2>&1 &
	FEPID=$!

	# ---- sampling loop (see the header) ----
	local bt="" ft="" n=0 first=0 clean=0 total=0 part="" done_=0 line pps t dt
	local fr br bw st p_t=0 p_fr=0 p_br=0 p_bw=0 p_st=0 p_dt=0 fs bs ws ok ctr_t1=0 ctr_t2=0
	local t_first=0 clean_us=0 total_us=0 ctr_n=0
	local busy=1
	[ "$kind" = event ] && busy=0
	local mshare
	mshare=$(awk -v m="$MINSHARE" 'BEGIN{printf "%d", m*1000}') # per mille
	local deadline=$((EPOCHSECONDS + 60 + WARMUP + MAXSEC * 2))
	local lfd=0 sfd=0
	exec {lfd}<"$rxlog"
	mkfifo "$LOGDIR/.sleep$TAG"
	exec {sfd}<>"$LOGDIR/.sleep$TAG" # a FIFO nobody writes: read -t on it is a fork-free sleep
	rm -f "$LOGDIR/.sleep$TAG"
	: >"$samp"
	while [ $done_ = 0 ]; do
		[ -z "$ft" ] && ft=$(worker_tid "$FEPID")
		[ "$kind" = dpdk ] && [ -z "$bt" ] && bt=$(worker_tid "$BEPID")
		while :; do
			if IFS= read -r -u "$lfd" line; then
				line=$part$line
				part=""
			else
				part=$part$line
				break
			fi
			case $line in *"$key"*) ;; *) continue ;; esac
			# shellcheck disable=SC2086
			set -- $line
			pps=$2
			n=$((n + 1))
			t=${EPOCHREALTIME/./}
			fr=0
			[ -n "$ft" ] && sched "$FEPID" "$ft" && fr=$R_RUN
			if [ "$kind" = dpdk ]; then
				br=0 bw=0
				[ -n "$bt" ] && sched "$BEPID" "$bt" && br=$R_RUN bw=$R_WAIT
			else
				sched "$BEPID"
				br=$R_RUN bw=$R_WAIT
			fi
			steal "$BE_CPU"
			st=$R_STEAL
			if [ $first = 0 ] && [ "$pps" -gt 0 ]; then
				first=$n
				t_first=$t
			fi
			dt=$((t - p_t))
			if [ $first -gt 0 ] && [ $n -gt $first ] && [ $((t - t_first)) -ge $((WARMUP * 1000000)) ]; then
				total=$((total + 1))
				total_us=$((total_us + dt))
				fs=$(((fr - p_fr) * 1000 / dt))
				bs=$(((br - p_br) * 1000 / dt))
				ws=$(((bw - p_bw + st - p_st) * 1000 / dt))
				[ $ws -lt 0 ] && ws=0
				ok=1
				# the shares are measured between two reads of the log: when this script was held
				# up (a late read, then several lines at once) the interval differs from testpmd's
				# period (1 s, or 2 s on VMs where testpmd's timer runs slow) and they mean nothing
				{ [ $((dt * 4)) -lt $((p_dt * 3)) ] || [ $((dt * 4)) -gt $((p_dt * 5)) ]; } && ok=0
				[ $fs -lt "$mshare" ] && ok=0
				if [ $busy = 1 ]; then
					[ $bs -lt "$mshare" ] && ok=0
				else
					[ $ws -gt $((1000 - mshare)) ] && ok=0
				fi
				if [ $ok = 1 ]; then
					clean=$((clean + 1))
					clean_us=$((clean_us + dt))
				fi
				echo "$n $pps $ok $fs $bs $ws $dt" >>"$samp"
				[ "$VERBOSE" = 1 ] && echo "  $id sample $n pps=$pps clean=$ok fe=$fs be=$bs be_wait+steal=$ws (per mille)" >&2
				if [ "$FILTER" = 1 ]; then
					{ [ $clean_us -ge $((DUR * 1000000)) ] || [ $total_us -ge $((MAXSEC * 1000000)) ]; } && done_=1
				else
					[ $total_us -ge $((DUR * 1000000)) ] && done_=1
				fi
				if [ $done_ = 1 ] && [ "$kind" != dpdk ]; then
					kill -USR1 "$BEPID" 2>/dev/null # end of the counter window
					ctr_t2=$t
				fi
			fi
			if [ $first -gt 0 ] && [ $total = 0 ] && [ "$kind" != dpdk ]; then
				# maybe the start of the counter window: the last of these before the first
				# counted sample is (its "port stats" record is number ctr_n)
				kill -USR1 "$BEPID" 2>/dev/null
				ctr_n=$((ctr_n + 1))
				ctr_t1=$t
			fi
			p_t=$t p_fr=$fr p_br=$br p_bw=$bw p_st=$st p_dt=$dt
			[ $done_ = 1 ] && break
		done
		[ $done_ = 1 ] && break
		if ! kill -0 "$FEPID" 2>/dev/null || ! kill -0 "$BEPID" 2>/dev/null || [ "$EPOCHSECONDS" -gt $deadline ]; then
			log "$id: run failed after $n samples; logs: $belog $felog"
			tail -5 "$felog" >&2
			tail -5 "$belog" >&2
			break
		fi
		read -r -t 0.2 -u "$sfd" _
	done
	exec {lfd}<&- {sfd}<&-
	sleep 0.3 # let the backend log the second "port stats" record before it is told to stop
	kill -INT "$FEPID" 2>/dev/null
	wait_gone "$FEPID"
	FEPID=""
	kill -INT "$BEPID" 2>/dev/null
	wait_gone "$BEPID"
	BEPID=""
	rm -f "$SOCK"
	[ "$MEM" = huge ] && rm -f "$HUGEDIR"/vsdpdk"$TAG"*

	# figure: median pps of clean samples (all samples, flagged, when none was clean)
	local flag=filtered want=1
	[ "$FILTER" = 1 ] || flag=unfiltered want=0
	if [ "$FILTER" = 1 ] && [ $clean = 0 ]; then flag=unfiltered want=0; fi
	local pm fm bm wm
	pm=$(col_median "$samp" 2 $want)
	fm=$(col_median "$samp" 4 $want)
	bm=$(col_median "$samp" 5 $want)
	wm=$(col_median "$samp" 6 $want)
	local med="NA 0 0 0"
	[ "$pm" != NA ] && med=$(awk -v p="$pm" -v f="$fm" -v b="$bm" -v w="$wm" \
		'BEGIN {printf "%.3f %.2f %.2f %.2f\n", p / 1e6, f / 1000, b / 1000, w / 1000}')
	# backend counters over the window (arcnet): rx_packets (f2b) / tx_packets (b2f) of guest0
	local ctr=NA field=rx_packets
	[ "$dir" = b2f ] && field=tx_packets
	if [ "$kind" != dpdk ] && [ "$ctr_t2" -gt "$ctr_t1" ] && [ "$ctr_t1" -gt 0 ]; then
		ctr=$(grep '"msg":"port stats"' "$belog" | grep '"port":"guest0"' |
			sed -n "s/.*\"$field\":\([0-9]*\).*/\1/p" | sed -n "${ctr_n},$((ctr_n + 1))p" | tr '\n' ' ' |
			awk -v dt=$((ctr_t2 - ctr_t1)) 'NF==2 {printf "%.3f", ($2 - $1) / dt; exit} {print "NA"}')
	fi
	[ -n "$ctr" ] || ctr=NA
	# shellcheck disable=SC2086
	set -- $med
	RUN_LINE="$1 $ctr $clean $total $2 $3 $4 $flag"
	echo "$id mpps=$1 ctr_mpps=$ctr clean=$clean/$total fe_cpu=$2 be_cpu=$3 be_wait_steal=$4 $flag MEM=$MEM" >>"$RESULTS"
	log "$id: $1 Mpps (backend counters: $ctr) clean=$clean/$total cpu fe=$2 be=$3 wait+steal=$4 $flag"
	[ "$1" != NA ]
}

# col_median FILE COL WANT: median of column COL over the rows whose 3rd column is 1 (WANT=1) or
# over all rows (WANT=0); NA when there is none.
col_median() {
	awk -v c="$2" -v want="$3" '(want == 0 || $3 == 1) {print $c}' "$1" | sort -g |
		awk '{v[NR] = $1} END {if (NR == 0) {print "NA"; exit}
			m = int((NR + 1) / 2); print (NR % 2) ? v[m] : (v[m] + v[m+1]) / 2}'
}

# median / min / max of numbers (NA ignored): "med min max" or "NA NA NA"
stats3() {
	printf '%s\n' "$@" | grep -v '^NA$' | sort -g | awk '{v[NR]=$1} END {
		if (NR == 0) { print "NA NA NA"; exit }
		m = int((NR + 1) / 2); md = (NR % 2) ? v[m] : (v[m] + v[m+1]) / 2
		printf "%.3f %.3f %.3f\n", md, v[1], v[NR] }'
}

# ---- main ---------------------------------------------------------------------------------------
KINDS="dpdk"
[ "$ARCNET_OK" = 1 ] && KINDS="dpdk $MODES"
log "work dir $WORK; cases: $CASES; kinds: $KINDS; rounds $ROUNDS; $DUR s per run; MEM=$MEM; CPUs be=$BE_CPU fe=$FE_CPU"
echo "# $(date +%FT%T) cases=$CASES kinds=$KINDS rounds=$ROUNDS dur=$DUR MEM=$MEM VIRTIO_ARGS=$VIRTIO_ARGS" >>"$RESULTS"
declare -A R # R[case kind] = space-separated per-round figures
for c in $CASES; do
	dir=${c%%-*}
	size=${c#*-}
	case $dir in f2b | b2f) ;; *) die "bad case '$c' (want f2b-SIZE or b2f-SIZE)" ;; esac
	case $size in '' | *[!0-9]*) die "bad case '$c'" ;; esac
	for ((r = 1; r <= ROUNDS; r++)); do
		for k in $KINDS; do
			run_one "$k" "$dir" "$size" "$r"
			# shellcheck disable=SC2086
			set -- $RUN_LINE
			R[$c $k]="${R[$c $k]:-} $1"
			[ "$8" = filtered ] && R[$c $k f]="${R[$c $k f]:-} $1"
			R[$c $k ctr]="${R[$c $k ctr]:-} $2"
			R[$c $k clean]="$(( ${R[$c $k clean]:-0} + $3 ))"
			R[$c $k total]="$(( ${R[$c $k total]:-0} + $4 ))"
			R[$c $k cpu]="${R[$c $k cpu]:-} $5/$6"
		done
	done
	# shellcheck disable=SC2046,SC2086
	set -- $(stats3 ${R[$c dpdk f]:-${R[$c dpdk]}})
	dmed=$1 dmin=$2 dmax=$3
	for m in $MODES; do
		name=$c
		[ "$m" = event ] || name=$c-$m
		if [ "$ARCNET_OK" = 1 ]; then
			# shellcheck disable=SC2046,SC2086
			set -- $(stats3 ${R[$c $m f]:-${R[$c $m]}})
			amed=$1 amin=$2 amax=$3
			# shellcheck disable=SC2046,SC2086
			set -- $(stats3 ${R[$c $m ctr]})
			actr=$1
			aclean="${R[$c $m clean]}/${R[$c $m total]}"
			acpu=$(echo "${R[$c $m cpu]}" | tr -s ' ' | sed 's/^ //; s/ /,/g')
		else
			amed=NA amin=NA amax=NA actr=NA aclean=0/0 acpu=NA
		fi
		awk -v name="$name" -v size="$size" -v a="$amed" -v d="$dmed" -v actr="$actr" \
			-v ar="$amin..$amax" -v dr="$dmin..$dmax" -v ac="$aclean" \
			-v dc="${R[$c dpdk clean]}/${R[$c dpdk total]}" -v acpu="$acpu" \
			-v dcpu="$(echo "${R[$c dpdk cpu]}" | tr -s ' ' | sed 's/^ //; s/ /,/g')" -v mem="$MEM" 'BEGIN {
			ag = (a == "NA") ? "NA" : sprintf("%.2f", a * size * 8 / 1000)
			dg = (d == "NA") ? "NA" : sprintf("%.2f", d * size * 8 / 1000)
			ratio = (a == "NA" || d == "NA" || d == 0) ? "NA" : sprintf("%.2f", a / d)
			split(ar, am, "[.][.]"); split(dr, dm, "[.][.]")
			rmax = (am[2] == "NA" || dm[2] == "NA" || dm[2] == 0) ? "NA" : sprintf("%.2f", am[2] / dm[2])
			printf "case=%s arcnet_mpps=%s dpdk_mpps=%s arcnet_gbps=%s dpdk_gbps=%s ratio=%s", name, a, d, ag, dg, ratio
			printf " ratio_of_max=%s arcnet_ctr_mpps=%s arcnet_range=%s dpdk_range=%s arcnet_clean=%s dpdk_clean=%s arcnet_cpu_fe/be=%s dpdk_cpu_fe/be=%s mem=%s\n", rmax, actr, ar, dr, ac, dc, acpu, dcpu, mem
		}' | tee -a "$RESULTS"
	done
done
