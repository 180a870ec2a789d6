#!/usr/bin/env bash
# What covering the whole node costs: N network namespaces of S sockets each (loopback pairs
# held by tcp_peer), and
#   - a one-shot snapshot of every namespace, `tcpstates --snapshot 1s --count 1 -o json`
#     (one walk of every process's files, one iter/tcp walk per namespace);
#   - the seeding of a live table, exec to first snapshot with the hooks loaded (--metrics);
#   - `ss -tan` run in each namespace in turn, what one would do by hand, as the peer;
# medians of RUNS runs, interleaved.
#
#   sudo bench/namespaces.sh                      # 1, 10 and 50 namespaces of 200 sockets
#   COUNTS="1 10" PAIRS=100 RUNS=3 sudo bench/namespaces.sh
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"1 10 50"}
PAIRS=${PAIRS:-100} # per namespace: 2 sockets each
RUNS=${RUNS:-5}

cargo build --release --locked --quiet --bin tcpstates --example tcp_peer
tool=$PWD/target/release/tcpstates
peer=$PWD/target/release/examples/tcp_peer
work=$(mktemp -d)
source bench/lib.sh
namespaces=()

cleanup() {
  release_holders
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

add_namespace() {
  local ns=tcpst-nsbench-$$-${#namespaces[@]}
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  namespaces+=("$ns")
  hold "$ns" "$PAIRS"
}

ss_each() { for ns in "${namespaces[@]}"; do ip netns exec "$ns" ss -tan; done; }
# The first snapshot of a live table: seeding with the hooks attached (metrics on a free port).
seeded() { "$tool" --snapshot 1s --count 1 -o json --metrics 127.0.0.1:0 -q; }

printf '%-11s %-8s %-14s %-14s %-12s %s\n' namespaces sockets one_shot_ms seeded_ms ss_each_ms \
  "one-shot/ss"
for count in $COUNTS; do
  while (( ${#namespaces[@]} < count )); do add_namespace; done
  sockets=$(ss_each | grep -vc '^State')
  t=$(median_ms "$tool" --snapshot 1s --count 1 -o json)
  h=$(median_ms seeded)
  s=$(median_ms ss_each)
  printf '%-11s %-8s %-14s %-14s %-12s %s\n' "$count" "$sockets" "$t" "$h" "$s" \
    "$(echo "scale=2; $t / $s" | bc)"
done
