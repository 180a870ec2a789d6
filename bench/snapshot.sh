#!/usr/bin/env bash
# Times a one-shot snapshot with owners, `tcpstates --snapshot 1s --count 1` (JSON and text),
# against `ss -tan`, `ss -tanp` and `netstat -tanp` on the same sockets, interleaved in one run,
# and prints ratios and the peak RSS of tcpstates (JSON) and `ss -tanp` (GNU time).
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

cargo build --release --locked --quiet --bin tcpstates --example tcp_peer
tool=$PWD/target/release/tcpstates
peer=$PWD/target/release/examples/tcp_peer
ns=tcpst-bench-$$
work=$(mktemp -d)
source bench/lib.sh

cleanup() {
  release_holders
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up


run_in_ns() { ip netns exec "$ns" "$@"; }
have() { command -v "$1" > /dev/null; }

# Peak RSS in MiB of one run of a command (GNU time), or - without it.
peak_mib() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f %M "$@" 2>&1 > /dev/null | tail -1 | awk '{printf "%.1f", $1 / 1024}'
  else
    echo -
  fi
}

printf '%-12s %-8s %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-12s %s\n' connections \
  sockets json_ms text_ms ss_tan_ms ss_tanp_ms netstat_ms json_MiB ss_tanp_MiB \
  "json/tan" "text/tan" "json/tanp"
held=0
for size in $SIZES; do
  hold "$ns" $(( size - held ))
  held=$size
  sockets=$(run_in_ns ss -tan | tail -n +2 | wc -l)
  seen=$("$tool" --netns "$ns" --snapshot 1s --count 1 -o json --summary 2>/dev/null |
    grep -o '"counts":{[^}]*}' | grep -o '[0-9]\+' | paste -sd+ | bc)
  if [ "$seen" != "$sockets" ]; then
    echo "tcpstates saw $seen sockets, ss saw $sockets" >&2
    exit 1
  fi
  t=$(median_ms "$tool" --netns "$ns" --snapshot 1s --count 1 -o json)
  x=$(median_ms "$tool" --netns "$ns" --snapshot 1s --count 1)
  a=$(median_ms run_in_ns ss -tan)
  p=$(median_ms run_in_ns ss -tanp)
  n=-
  have netstat && n=$(median_ms run_in_ns netstat -tanp)
  tm=$(peak_mib "$tool" --netns "$ns" --snapshot 1s --count 1 -o json)
  pm=$(peak_mib ip netns exec "$ns" ss -tanp)
  printf '%-12s %-8s %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-12s %s\n' "$size" \
    "$sockets" "$t" "$x" "$a" "$p" "$n" "$tm" "$pm" "$(echo "scale=2; $t / $a" | bc)" \
    "$(echo "scale=2; $x / $a" | bc)" "$(echo "scale=2; $t / $p" | bc)"
done
have netstat || echo "(netstat not installed: apt-get install net-tools)"
