#!/bin/sh
# /init of the vhost-arcnet test guest (test/qemu): loads the virtio modules,
# brings eth0 up, runs the steps of test= in order and reports on the serial
# console, one machine-readable line per fact:
#   GUEST-<TAG> key=value ...      (values never contain spaces; lists use ',')
# and finally GUEST-STATS, GUEST-RESULT PASS|FAIL <reason>, GUEST-DONE, then
# powers off. The first failing step ends the run.
#
# Knobs (kernel command line, key=value, no spaces):
#   test=STEP,STEP,...   steps, each NAME[:ARG[:ARG...]] (default dhcp,ping)
#   addr=CIDR gw=IP      static address and default gateway (192.168.127.2/24, 192.168.127.1)
#   mac=MAC mtu=N        set before the link goes up
#   hostname=NAME        guest hostname, also sent in DHCP (option 12)
#   pings=3 ping_i=0.2 ping_w=2   ping count, interval, reply timeout
#   dhcp_tries=3         udhcpc DISCOVERs (1 s apart)
#   npkts=3              arping count
#   wait_s=120           how long wait: blocks for its token
#   wget_s=60            how long one wget: may take
#   carrier_s=30         how long carrier: waits
#   poweroff=1           0 = drop to a shell at the end instead of poweroff -f
# Steps:
#   dhcp                 udhcpc (stays in the background for renew), GUEST-DHCP per event, GUEST-IP
#   renew                SIGUSR1 to udhcpc, wait for the next bound/renew event, GUEST-RENEW
#   static[:CIDR[:GW]]   static address, GUEST-IP
#   addip:CIDR           add one more address (e.g. a spoofed one)
#   setmac:MAC           change the MAC address (written with '-': ':' separates arguments)
#   ping[:TARGET[:N[:SRC]]]    FAIL unless a reply comes back (TARGET default: the gateway;
#                        SRC: source address, ping -I), GUEST-PING
#   noping[:TARGET[:N[:SRC]]]  FAIL if a reply comes back, GUEST-PING
#   nslookup:NAME[:WANT[:SERVER]]  FAIL unless NAME resolves (to WANT), GUEST-DNS
#   arping[:TARGET[:N]]  ARP requests, never fails (tx-only backends), GUEST-ARPING
#   tx                   DHCP DISCOVERs + static address + arping; FAIL if nothing was sent
#   raw:HEX[:N]          send the Ethernet frame HEX N times from a raw socket, GUEST-RAW
#   rxcheck / txcheck    FAIL unless rx_packets / tx_packets > 0 (waits up to 3 s)
#   carrier[:up|down]    wait for the link state, GUEST-CARRIER
#   wget:URL[:SHA256]    download URL (http://..., its ':' are fine) with busybox wget, at
#                        most wget_s seconds; FAIL unless it completes (and its SHA-256 is
#                        SHA256), GUEST-WGET url= status= bytes= sha256= secs=
#   post:URL[:N]         upload the file of the Nth wget: (default the last) to http://HOST[:PORT]/PATH
#                        as an HTTP/1.0 POST through busybox nc (wget --post-file stops at the
#                        first NUL byte), at most wget_s seconds; FAIL unless the answer is 2xx,
#                        GUEST-POST url= status= bytes= secs= reply=FIRST,LINE,OF,THE,BODY
#   udp:HOST:PORT[:N]    N (default 3) datagrams to a UDP echo server (arcnet-udp -c), FAIL
#                        unless every one comes back unchanged, GUEST-UDP
#   pingstream[:TARGET[:SECS[:MS]]]  ICMP echo requests every MS (default 10) ms for SECS
#                        (default 10) s (arcnet-udp -ping), GUEST-PINGSTREAM start ... first,
#                        then GUEST-PINGSTREAM target= sent= received= lost= dup= max_gap_ms=
#                        lost_run= (the guest's own clock); FAIL if no reply came back
#   udpserve:PORT        UDP echo server in the background (arcnet-udp -l), GUEST-UDPSERVE
#   tcpserve:PORT        TCP server in the background (busybox nc -ll): it greets each
#                        connection with "HELLO host=HOSTNAME peer=IP:PORT" (the client as
#                        the guest sees it) and echoes what it reads until the client
#                        closes, GUEST-TCPSERVE
#   tcp:HOST:PORT        connect with busybox nc, send a line and half-close; FAIL unless
#                        the line comes back, GUEST-TCP target= hello=FIRST,LINE echoed=1
#   traceroute:HOST[:FIRST[:BYTES]]  busybox traceroute -n -q 1 -m 3 -w 2 (with BYTES: probes
#                        of BYTES with DF set, -F); FAIL unless the first hop answered (and is
#                        FIRST), GUEST-TRACEROUTE hops=ADDR|*,... first= reached=
#                        fragneeded=MTU|none (a hop's ICMP fragmentation needed, !F-MTU)
#   wait:TOKEN           GUEST-WAIT TOKEN, then block until the console gets a line
#                        "TOKEN [k=v ...]"; each k=v becomes @k for later step arguments
#   sleep:SECONDS  stats  shell
# An argument @name is replaced by the value a wait: line gave for name, and
# @gw / @ip by the current gateway / address.
/bin/busybox --install -s
set -f
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "GUEST-$*"; }
say "USERSPACE uptime=$(up) kernel=$(uname -r)"

test=dhcp,ping addr=192.168.127.2/24 gw=192.168.127.1 mac= mtu= hostname=arcnet-guest
pings=3 ping_i=0.2 ping_w=2 dhcp_tries=3 npkts=3 wait_s=120 carrier_s=30 poweroff=1 wget_s=60
iface=eth0
for a in $(cat /proc/cmdline); do
  k=${a%%=*} v=${a#*=}
  case "$k" in
    test|addr|gw|mac|mtu|hostname|pings|ping_i|ping_w|dhcp_tries|npkts|wait_s|carrier_s|poweroff|wget_s)
      eval "$k=\$v" ;;
  esac
done
say "TEST test=$test"
hostname "$hostname"
LEASE_IP= LEASE_GW=$gw

stat1() { cat "/sys/class/net/$iface/statistics/$1" 2>/dev/null || echo 0; }
stats() {
  for s in rx_packets tx_packets rx_bytes tx_bytes rx_dropped tx_dropped rx_errors tx_errors; do
    printf '%s=%s ' "$s" "$(stat1 $s)"
  done
}
finish() {
  say "STATS $(stats)"
  say "RESULT $*"
  say "DONE uptime=$(up)"
  if [ "$poweroff" = 1 ]; then poweroff -f; fi
  exec sh
}
fail() { finish "FAIL $*"; }
list() { echo $* | tr ' ' ','; }

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || say "ERROR insmod=$m"
done
i=0
while [ ! -e "/sys/class/net/$iface" ] && [ $i -lt 100 ]; do usleep 50000; i=$((i + 1)); done
[ -e "/sys/class/net/$iface" ] || fail "no-$iface have=$(list $(ls /sys/class/net))"
ip link set lo up
[ -n "$mac" ] && ip link set "$iface" address "$mac"
[ -n "$mtu" ] && ip link set "$iface" mtu "$mtu"
ip link set "$iface" up || fail "link-up"
n=/sys/class/net/$iface
say "NIC name=$iface mac=$(cat $n/address) driver=$(basename "$(readlink $n/device/driver)") mtu=$(cat $n/mtu) carrier=$(cat $n/carrier 2>/dev/null) features=$(cat $n/device/features) uptime=$(up)"

# arg VALUE: VALUE, or for @name the value a wait: line gave (or @gw, @ip).
arg() {
  case "$1" in
    @gw) echo "$LEASE_GW" ;;
    @ip) echo "$LEASE_IP" ;;
    @*) k=${1#@}
      case "$k" in *[!a-z0-9_]*) echo "" ;; *) eval "echo \"\$var_$k\"" ;; esac ;;
    *) echo "$1" ;;
  esac
}

do_dhcp() {
  rm -f /run/lease /run/udhcpc.pid
  udhcpc -i "$iface" -n -t "$dhcp_tries" -T 1 -A 1 -O mtu -O search -x "hostname:$hostname" \
    -s /etc/udhcpc.script -p /run/udhcpc.pid > /tmp/udhcpc.log 2>&1
  rc=$?
  sed 's/^/udhcpc: /' /tmp/udhcpc.log
  [ $rc = 0 ] && [ -f /run/lease ] || fail "dhcp rc=$rc"
  . /run/lease
  say "IP ip=$LEASE_IP mask=$LEASE_MASK gw=$LEASE_GW dns=$LEASE_DNS domain=$LEASE_DOMAIN search=$LEASE_SEARCH mtu=$LEASE_MTU lease=$LEASE_TIME server=$LEASE_SERVER uptime=$(up)"
}

do_renew() {
  [ -f /run/udhcpc.pid ] || fail "renew no-udhcpc"
  seq=$(cat /run/lease.seq 2>/dev/null)
  kill -USR1 "$(cat /run/udhcpc.pid)" || fail "renew kill"
  i=0
  while [ "$(cat /run/lease.seq 2>/dev/null)" = "$seq" ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
  [ "$(cat /run/lease.seq 2>/dev/null)" != "$seq" ] || fail "renew timeout"
  . /run/lease
  say "RENEW ip=$LEASE_IP gw=$LEASE_GW lease=$LEASE_TIME uptime=$(up)"
}

do_static() {
  a=${1:-$addr} g=${2-$gw}
  ip addr add "$a" dev "$iface" || fail "static addr=$a"
  [ -n "$g" ] && { ip route add default via "$g" dev "$iface" || fail "static gw=$g"; }
  LEASE_IP=${a%/*} LEASE_GW=$g
  say "IP ip=$LEASE_IP gw=$LEASE_GW static=1 uptime=$(up)"
}

# do_ping WANT TARGET COUNT [SRC]: WANT=1 needs a reply, WANT=0 needs none.
do_ping() {
  t=${2:-$LEASE_GW} c=${3:-$pings}
  ping -c "$c" -i "$ping_i" -W "$ping_w" ${4:+-I "$4"} "$t" > /tmp/ping 2>&1
  rc=$?
  sed 's/^/ping: /' /tmp/ping
  s=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' /tmp/ping)
  r=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)
  say "PING target=$t src=$4 sent=${s:-0} received=${r:-0} rc=$rc"
  if [ "$1" = 1 ]; then
    [ "${r:-0}" -gt 0 ] || fail "ping $t"
  else
    [ "${r:-0}" = 0 ] || fail "noping $t answered"
  fi
}

do_nslookup() {
  [ -n "$1" ] || fail "nslookup needs a name"
  nslookup "$1" $3 > /tmp/ns 2>&1
  rc=$?
  sed 's/^/nslookup: /' /tmp/ns
  addrs=$(awk '/^Name:/ { f = 1; next } f && /^Address/ { print $NF }' /tmp/ns | tr '\n' ',' | sed 's/,$//')
  say "DNS name=$1 addrs=$addrs rc=$rc"
  [ -n "$addrs" ] || fail "dns $1"
  if [ -n "$2" ]; then
    case ",$addrs," in *",$2,"*) ;; *) fail "dns $1 want=$2 got=$addrs" ;; esac
  fi
}

do_arping() {
  t=${1:-$LEASE_GW} c=${2:-$npkts}
  arping -c "$c" -w "$((c + 1))" -I "$iface" "$t" > /tmp/arping 2>&1
  sed 's/^/arping: /' /tmp/arping
  s=$(sed -n 's/^Sent \([0-9]*\) probe.*/\1/p' /tmp/arping)
  r=$(sed -n 's/^Received \([0-9]*\) repl.*/\1/p' /tmp/arping)
  say "ARPING target=$t sent=${s:-0} received=${r:-0}"
}

# counter_check NAME: wait up to 3 s for statistics/NAME > 0.
counter_check() {
  i=0
  while [ "$(stat1 "$1")" = 0 ] && [ $i -lt 30 ]; do usleep 100000; i=$((i + 1)); done
  [ "$(stat1 "$1")" != 0 ] || fail "no-$1"
}

do_wait() {
  [ -n "$1" ] || fail "wait needs a token"
  say "WAIT $1"
  while :; do
    line=
    read -t "$wait_s" -r line || fail "wait $1 timeout"
    set -- "$1" $(echo "$line" | tr -d '\r')
    [ "$2" = "$1" ] || { set -- "$1"; continue; }
    tok=$1
    shift 2
    for kv in "$@"; do
      k=${kv%%=*} v=${kv#*=}
      case "$k" in ''|*[!a-z0-9_]*) continue ;; esac
      eval "var_$k=\$v"
    done
    say "WOKE $tok uptime=$(up)"
    return
  done
}

do_carrier() {
  want=1
  [ "${1:-up}" = down ] && want=0
  i=0 lim=$((carrier_s * 10))
  while [ "$(cat "$n/carrier" 2>/dev/null)" != $want ] && [ $i -lt $lim ]; do usleep 100000; i=$((i + 1)); done
  [ "$(cat "$n/carrier" 2>/dev/null)" = $want ] || fail "carrier ${1:-up}"
  say "CARRIER state=${1:-up} waited_ms=$((i * 100)) uptime=$(up)"
}

# do_wget ARG...: the step's arguments, split at ':'; a last one of 64 hex
# digits is the wanted SHA-256, the others joined by ':' are the URL.
nwget=0
do_wget() {
  want= url=$1
  shift
  for a in "$@"; do url="$url:$a"; done
  last=${url##*:}
  case "$last" in @*) last=$(arg "$last") ;; esac
  if [ ${#last} = 64 ] && [ -z "$(echo "$last" | tr -d '0-9a-f')" ]; then
    want=$last url=${url%:*}
  fi
  [ -n "$url" ] || fail "wget needs a URL"
  nwget=$((nwget + 1))
  out=/tmp/wget.$nwget
  t0=$(up)
  timeout "$wget_s" wget -S -O "$out" "$url" > /tmp/wget.log 2>&1
  rc=$?
  t1=$(up)
  grep -v 'ETA' /tmp/wget.log | sed 's/^/wget: /'
  status=$(sed -n 's/^ *HTTP\/[0-9.]* \([0-9]*\).*/\1/p' /tmp/wget.log | tail -n 1)
  bytes=$(stat -c %s "$out" 2>/dev/null || echo 0)
  sum=$(sha256sum "$out" 2>/dev/null | cut -d' ' -f1)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  say "WGET url=$url status=${status:-none} bytes=$bytes sha256=${sum:-none} secs=$secs rc=$rc"
  [ $rc = 0 ] || fail "wget $url rc=$rc"
  if [ -n "$want" ] && [ "$sum" != "$want" ]; then
    fail "wget $url sha256=$sum want=$want"
  fi
}

do_post() {
  url=$1 n=$nwget
  shift
  for a in "$@"; do url="$url:$a"; done
  last=${url##*:}
  case "$last" in [0-9]|[0-9][0-9]) n=$last url=${url%:*} ;; esac
  in=/tmp/wget.$n
  [ -f "$in" ] || fail "post $url: no download $n"
  rest=${url#http://}
  hostport=${rest%%/*} path=/${rest#*/}
  [ "$rest" != "$url" ] && [ "$hostport" != "$rest" ] || fail "post $url: want http://HOST[:PORT]/PATH"
  host=${hostport%:*} port=80
  [ "$host" != "$hostport" ] && port=${hostport##*:}
  bytes=$(stat -c %s "$in")
  t0=$(up)
  {
    printf 'POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %s\r\n\r\n' \
      "$path" "$hostport" "$bytes"
    cat "$in"
  } | timeout "$wget_s" nc "$host" "$port" > /tmp/post.out 2> /tmp/post.err
  rc=$?
  t1=$(up)
  tr -d '\r' < /tmp/post.out | sed 's/^/post: /'
  sed 's/^/post: /' /tmp/post.err
  status=$(head -n 1 /tmp/post.out | sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p')
  reply=$(tr -d '\r' < /tmp/post.out | awk 'b { print; exit } /^$/ { b = 1 }' | tr -s ' \t' ',,')
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  say "POST url=$url status=${status:-none} bytes=$bytes secs=$secs rc=$rc reply=${reply:-none}"
  case "$status" in 2??) ;; *) fail "post $url status=${status:-none} rc=$rc" ;; esac
}

do_udp() {
  [ -n "$1" ] && [ -n "$2" ] || fail "udp needs HOST:PORT"
  out=$(arcnet-udp -c "$1:$2" -n "${3:-3}" 2>&1)
  rc=$?
  echo "$out" | sed 's/^/udp: /'
  say "UDP target=$1:$2 $(echo "$out" | grep '^sent=') rc=$rc"
  [ $rc = 0 ] || fail "udp $1:$2"
}

# listening PROTO PORT: wait up to 3 s for a listening socket on PORT.
listening() {
  i=0
  while [ $i -lt 30 ]; do
    if [ "$1" = tcp ]; then
      netstat -ltn 2>/dev/null | grep -q ":$2 " && return 0
    else
      netstat -lun 2>/dev/null | grep -q ":$2 " && return 0
    fi
    usleep 100000
    i=$((i + 1))
  done
  return 1
}

do_tcpserve() {
  [ -n "$1" ] || fail "tcpserve needs a port"
  cat > /tmp/tcpserve.sh <<EOF
#!/bin/sh
peer=\$(netstat -tn 2>/dev/null | awk '(\$6 == "ESTABLISHED" || \$6 == "CLOSE_WAIT") && \$4 ~ /:$1\$/ { print \$5; exit }')
echo "HELLO host=$(hostname) peer=\${peer:-unknown}"
exec cat
EOF
  chmod +x /tmp/tcpserve.sh
  nc -ll -p "$1" -e /tmp/tcpserve.sh > /tmp/tcpserve.log 2>&1 &
  pid=$!
  listening tcp "$1" || { sed 's/^/tcpserve: /' /tmp/tcpserve.log; fail "tcpserve $1 not listening"; }
  say "TCPSERVE port=$1 pid=$pid"
}

do_tcp() {
  [ -n "$1" ] && [ -n "$2" ] || fail "tcp needs HOST:PORT"
  msg="tcp from $(hostname) to $1:$2"
  echo "$msg" | timeout 10 nc "$1" "$2" > /tmp/tcp.out 2>&1
  rc=$?
  sed 's/^/tcp: /' /tmp/tcp.out
  hello=$(head -n 1 /tmp/tcp.out | tr -s ' \t' ',,')
  echoed=0
  grep -qxF "$msg" /tmp/tcp.out && echoed=1
  say "TCP target=$1:$2 hello=${hello:-none} echoed=$echoed rc=$rc"
  [ $echoed = 1 ] || fail "tcp $1:$2"
}

do_pingstream() {
  t=${1:-$LEASE_GW} secs=${2:-10} ms=${3:-10}
  say "PINGSTREAM start target=$t secs=$secs ms=$ms uptime=$(up)"
  out=$(arcnet-udp -ping "$t" -for "${secs}s" -every "${ms}ms" 2>&1)
  rc=$?
  echo "$out" | grep -v '^sent=' | sed 's/^/pingstream: /'
  say "PINGSTREAM target=$t $(echo "$out" | grep '^sent=') rc=$rc uptime=$(up)"
  [ $rc = 0 ] || fail "pingstream $t"
}

do_udpserve() {
  [ -n "$1" ] || fail "udpserve needs a port"
  arcnet-udp -l "$1" > /tmp/udpserve.log 2>&1 &
  pid=$!
  listening udp "$1" || { sed 's/^/udpserve: /' /tmp/udpserve.log; fail "udpserve $1 not listening"; }
  say "UDPSERVE port=$1 pid=$pid"
}

do_traceroute() {
  [ -n "$1" ] || fail "traceroute needs a host"
  if [ -n "$3" ]; then
    traceroute -F -n -q 1 -m 3 -w 2 "$1" "$3" > /tmp/tr 2>&1
  else
    traceroute -n -q 1 -m 3 -w 2 "$1" > /tmp/tr 2>&1
  fi
  rc=$?
  sed 's/^/traceroute: /' /tmp/tr
  hops=$(awk '$1 ~ /^[0-9]+$/ { print $2 }' /tmp/tr | tr '\n' ',' | sed 's/,$//')
  first=${hops%%,*}
  reached=0
  case ",$hops," in *",$1,"*) reached=1 ;; esac
  fn=$(sed -n 's/.*!F-\([0-9]*\).*/\1/p' /tmp/tr | head -n 1)
  say "TRACEROUTE target=$1 hops=${hops:-none} first=${first:-none} reached=$reached fragneeded=${fn:-none} bytes=${3:-default} rc=$rc"
  [ -n "$first" ] && [ "$first" != "*" ] || fail "traceroute $1 no first hop"
  if [ -n "$2" ] && [ "$first" != "$2" ]; then
    fail "traceroute $1 first=$first want=$2"
  fi
}

run_step() {
  s=$1
  shift
  a1=$(arg "$1") a2=$(arg "$2") a3=$(arg "$3")
  case "$s" in
    dhcp) do_dhcp ;;
    renew) do_renew ;;
    static) do_static "$a1" ${2+"$a2"} ;;
    addip) ip addr add "$a1" dev "$iface" || fail "addip $a1"; say "ADDIP addr=$a1" ;;
    setmac)
      m=$(echo "$a1" | tr - :)
      ip link set "$iface" down && ip link set "$iface" address "$m" && ip link set "$iface" up || fail "setmac $m"
      say "SETMAC mac=$(cat $n/address)" ;;
    ping) do_ping 1 "$a1" "$a2" "$a3" ;;
    noping) do_ping 0 "$a1" "$a2" "$a3" ;;
    nslookup) do_nslookup "$a1" "$a2" "$a3" ;;
    arping) do_arping "$a1" "$a2" ;;
    tx)
      udhcpc -i "$iface" -n -q -t 2 -T 1 -A 1 -s /bin/true > /tmp/udhcpc.log 2>&1
      sed 's/^/udhcpc: /' /tmp/udhcpc.log
      [ -n "$LEASE_IP" ] || do_static
      do_arping
      counter_check tx_packets ;;
    raw)
      out=$(arcnet-rawframe -i "$iface" -n "${a2:-1}" "$a1" 2>&1) || fail "raw $(list $out)"
      say "RAW $out" ;;
    rxcheck) counter_check rx_packets ;;
    txcheck) counter_check tx_packets ;;
    carrier) do_carrier "$a1" ;;
    wget) do_wget "$@" ;;
    post) do_post "$@" ;;
    udp) do_udp "$a1" "$a2" "$a3" ;;
    udpserve) do_udpserve "$a1" ;;
    pingstream) do_pingstream "$a1" "$a2" "$a3" ;;
    tcpserve) do_tcpserve "$a1" ;;
    tcp) do_tcp "$a1" "$a2" ;;
    traceroute) do_traceroute "$a1" "$a2" "$a3" ;;
    wait) do_wait "$a1" ;;
    sleep) sleep "$a1" ;;
    stats) say "STATS $(stats)" ;;
    shell) poweroff=0; finish "SHELL" ;;
    *) fail "unknown-step $s" ;;
  esac
}

oldifs=$IFS
for step in $(echo "$test" | tr ',' ' '); do
  say "STEP $step uptime=$(up)"
  IFS=:
  set -- $step
  IFS=$oldifs
  run_step "$@"
done
finish PASS
