# hogs.sh, sourced by bench/latency.sh and bench/latency-rules.sh: busy
# loops that oversubscribe the CPUs (HOG=N), each in a session of its own
# like another user's process, ended by PID.
hogs=()
start_hogs() { # N
	local i
	for i in $(seq "$1"); do
		setsid bash -c 'while :; do :; done' &
		hogs+=($!)
	done
	sleep 1 # the load average notices them
}
stop_hogs() {
	local p
	for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${hogs[@]}"; do wait "$p" 2>/dev/null || true; done
	hogs=()
}
