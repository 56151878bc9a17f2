#!/bin/bash
# perf-frontend.sh CASE [SECONDS] BACKEND...: where the virtio_user
# frontend spends its time behind each backend. Runs bench/alternate.sh
# CASE with one pass of SECONDS (default 30, at least 20) per BACKEND (dpdk
# | work | REV, as alternate.sh), records the frontend process (perf record,
# cpu-clock) for SECONDS-16 s in the middle of each slot, and prints:
#   - the frontend's rate behind each backend (alternate.sh's line);
#   - per backend, the frontend's top addresses (Debian's DPDK libraries
#     have no symbols for their static functions: map an address with
#     objdump -d --start-address=... on the library perf names);
#   - per address, the frontend's time per frame behind each backend,
#     against the first (samples / all samples / rate; sorted by the
#     difference): where a backend makes the frontend slower.
#
# Why (issue 14): the frontend, not the backend, was the slower side of
# loop-64-packed, and its own profile showed what the backend did to it:
# 18 % of its time on one load of num_buffers from the receive header
# behind vhost-arcnet, none behind net_vhost (plainHeader now stores only
# what differs). Needs what alternate.sh needs, perf and python3.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 CASE [SECONDS] BACKEND..." >&2; exit 2; }
cs=$1; shift
secs=30
if [[ $1 =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
[ "$secs" -ge 20 ] || { echo "SECONDS must be at least 20" >&2; exit 2; }
[ $# -ge 1 ] || { echo "no backend" >&2; exit 2; }
top=$(git rev-parse --show-toplevel)
out=$(mktemp -d)
alt=""
cleanup() {
	[ -n "$alt" ] && kill -INT "$alt" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$out"
}
trap cleanup EXIT
bash "$top/bench/alternate.sh" "$cs" 1 "$secs" "$@" >"$out/alt.log" 2>&1 &
alt=$!
# alternate.sh's own processes: its frontend (testpmd, --file-prefix
# alt<its pid>fe) and, in turn, each backend (testpmd alt<pid>be, or
# vhost-arcnet connected to its socket).
fe=""
for _ in $(seq 1200); do
	fe=$(pgrep -f -- "--file-prefix=alt${alt}fe" | head -1 || true)
	[ -n "$fe" ] && break
	sleep 0.1
done
[ -n "$fe" ] || { echo "frontend did not start" >&2; cat "$out/alt.log" >&2; exit 1; }
i=0
for b in "$@"; do
	i=$((i + 1))
	pid=""
	for _ in $(seq 1200); do
		if [ "$b" = dpdk ]; then
			pid=$(pgrep -f -- "--file-prefix=alt${alt}be" | head -1 || true)
		else
			pid=$(pgrep -f -- "bin-$b --connect" | head -1 || true)
		fi
		[ -n "$pid" ] && break
		sleep 0.1
	done
	[ -n "$pid" ] || { echo "backend $b did not start" >&2; exit 1; }
	sleep 10 # testpmd as a backend takes 6-10 s to start
	perf record -o "$out/$i.data" -p "$fe" -- sleep $((secs - 16)) >/dev/null 2>&1
	# wait for this backend to go before looking for the next
	while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
done
wait "$alt" || true
alt=""
grep -E '^(#|pass=)' "$out/alt.log"
i=0
for b in "$@"; do
	i=$((i + 1))
	perf report -i "$out/$i.data" --no-children --stdio --sort dso,sym -F overhead,sample,dso,sym 2>/dev/null |
		grep -v "^#" | grep -v "^$" | sort -k2,2 -rn >"$out/$i.txt" || true
	echo "== frontend behind $b: top addresses"
	head -12 "$out/$i.txt"
done
python3 - "$out" "$@" <<'EOF'
import re, sys
out, names = sys.argv[1], sys.argv[2:]
rate = {}
for line in open(out + "/alt.log"):
    m = re.match(r"pass=1 backend=(\S+) .*mpps=([0-9.]+)", line)
    if m:
        rate[m.group(1)] = float(m.group(2))
prof = []
for i, b in enumerate(names, 1):
    d, tot = {}, 0
    for line in open("%s/%d.txt" % (out, i)):
        f = line.split()
        if len(f) < 5 or not f[1].isdigit():
            continue
        key = f[2] + " " + f[-1]
        d[key] = d.get(key, 0) + int(f[1])
        tot += int(f[1])
    prof.append((d, tot))
if not all(b in rate and rate[b] > 0 for b in names) or any(t == 0 for _, t in prof):
    print("no rate or no samples for a backend: no per-frame comparison")
    sys.exit(0)
# time per frame at an address, in ns: share of the CPU / frames per second
def per(i, k):
    d, tot = prof[i]
    return d.get(k, 0) / tot / (rate[names[i]] * 1e6) * 1e9
keys = set().union(*(d for d, _ in prof))
print("== frontend ns per frame by address, against %s (total %s)" % (names[0],
      " ".join("%s=%.1f" % (b, 1e3 / rate[b]) for b in names)))
for b in range(1, len(names)):
    rows = sorted(((per(b, k) - per(0, k), k) for k in keys), reverse=True)
    print("-- %s - %s" % (names[b], names[0]))
    for diff, k in rows[:12]:
        print("%+7.2f  %s=%.2f %s=%.2f  %s" % (diff, names[0], per(0, k), names[b], per(b, k), k))
EOF
