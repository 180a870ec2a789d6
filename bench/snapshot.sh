#!/usr/bin/env bash
# Times a one-shot snapshot with owners, `tcpstates --snapshot 1s --count 1`, against `ss -tan`,
# `ss -tanp` and `netstat -tanp` on the same sockets, interleaved in one run, and prints ratios.
#
#   sudo bench/snapshot.sh                 # 1k, 10k and 50k connections, 5 runs each
#   SIZES="1000" RUNS=3 sudo bench/snapshot.sh
#
# Connections are loopback pairs inside a network namespace made for the run (2 sockets each),
# held by `tcp_peer pairs` processes of at most 9000 pairs each (the open-file limit is 20k).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"1000 10000 50000"}
RUNS=${RUNS:-5}
PER_PROCESS=9000

cargo build --release --locked --quiet --bin tcpstates --example tcp_peer
tool=$PWD/target/release/tcpstates
peer=$PWD/target/release/examples/tcp_peer
ns=tcpst-bench-$$
work=$(mktemp -d)
holders=()

cleanup() {
  exec 3>&- # the holders read EOF and close their connections
  for pid in "${holders[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The holders' stdin: open here for writing, so they wait until this script ends.
mkfifo "$work/stdin"
exec 3<> "$work/stdin"
ip netns add "$ns"
ip -n "$ns" link set lo up

# Median wall time in ms of a command run $RUNS times.
median_ms() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local start end
    start=$(date +%s%N)
    "$@" > /dev/null 2>&1
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

hold() {
  local pairs=$1 i=0
  while (( pairs > 0 )); do
    local n=$(( pairs < PER_PROCESS ? pairs : PER_PROCESS ))
    local out=$work/holder.$i
    ip netns exec "$ns" "$peer" pairs 127.0.0.1 "$n" < "$work/stdin" > "$out" &
    holders+=($!)
    until grep -q ready "$out" 2>/dev/null; do sleep 0.1; done
    pairs=$(( pairs - n ))
    i=$(( i + 1 ))
  done
}

run_in_ns() { ip netns exec "$ns" "$@"; }
have() { command -v "$1" > /dev/null; }

printf '%-12s %-8s %-12s %-10s %-10s %-14s %-18s %s\n' connections sockets tcpstates_ms \
  ss_tan_ms ss_tanp_ms netstat_tanp_ms "tcpstates/ss-tanp" "tcpstates/ss-tan"
held=0
for size in $SIZES; do
  hold $(( size - held ))
  held=$size
  sockets=$(run_in_ns ss -tan | tail -n +2 | wc -l)
  seen=$("$tool" --netns "$ns" --snapshot 1s --count 1 -o json --summary 2>/dev/null |
    grep -o '"counts":{[^}]*}' | grep -o '[0-9]\+' | paste -sd+ | bc)
  if [ "$seen" != "$sockets" ]; then
    echo "tcpstates saw $seen sockets, ss saw $sockets" >&2
    exit 1
  fi
  t=$(median_ms "$tool" --netns "$ns" --snapshot 1s --count 1 -o json)
  a=$(median_ms run_in_ns ss -tan)
  p=$(median_ms run_in_ns ss -tanp)
  n=-
  have netstat && n=$(median_ms run_in_ns netstat -tanp)
  printf '%-12s %-8s %-12s %-10s %-10s %-14s %-18s %s\n' "$size" "$sockets" "$t" "$a" "$p" "$n" \
    "$(echo "scale=3; $t / $p" | bc)" "$(echo "scale=2; $t / $a" | bc)"
done
have netstat || echo "(netstat not installed: apt-get install net-tools)"
