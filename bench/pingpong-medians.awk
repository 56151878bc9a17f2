# pingpong-medians.awk: medians (min..max) per backend and case of the
# BenchmarkPingPong metrics in the lines bench/latency.sh and
# bench/latency-rules.sh collect ("LABEL <bench line>": field 1 the label,
# field 3 the case, then value/unit pairs).
BEGIN { nm = split("rtt-p50-us rtt-p99-us rtt-p99.9-us kicks/rtt be-cpu-us/rtt be-wait-us/rtt fe-wait-us/rtt be-busy-threads", order, " ") }
{ key = $1 " " $3; keys[key] = 1
  for (i = 5; i < NF; i += 2) { m = $(i + 1); k = key SUBSEP m; n[k]++; v[k, n[k]] = $i; } }
function med(k,    i, j, t, a, c) {
	c = n[k]; for (i = 1; i <= c; i++) a[i] = v[k, i]
	for (i = 2; i <= c; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return sprintf("%s (%s..%s)", (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2, a[1], a[c])
}
END { for (key in keys) { line = key
	for (i = 1; i <= nm; i++) { m = order[i]; if ((key SUBSEP m) in n) line = line "  " m "=" med(key SUBSEP m) }
	print line } }
