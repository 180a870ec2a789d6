#!/usr/bin/env bash
# The cost of `tcpstates --top` in a real terminal (tmux, 160x45): CPU share of a core while
# connections churn, and the time of a refresh with its frame, with N sockets held open.
#
#   sudo bench/top.sh                      # 1,000 and 50,000 sockets, 30 s each
#   SIZES="1000" SECONDS_PER_RUN=60 sudo bench/top.sh
#
# Sockets are loopback pairs in a network namespace made for the run (held by `tcp_peer pairs`);
# the churn (examples/churn, RATE connections/s, about 11 transitions each) runs in the same
# namespace, so --top --netns sees every transition. CPU is the tool's utime + stime over the
# churn, from /proc; from its -v summary line, how long refreshes took (the table read into a
# screen, the processes' files walked when due) and frames (the rows selected, sorted, drawn).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"1000 50000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
RATE=${RATE:-90}

cargo build --release --locked --quiet --bin tcpstates --example tcp_peer --example churn
tool=$PWD/target/release/tcpstates
peer=$PWD/target/release/examples/tcp_peer
churn=$PWD/target/release/examples/churn
ns=tcpst-top-$$
session=tcpst-top-$$
work=$(mktemp -d)
source bench/lib.sh

cleanup() {
  tmux kill-session -t "$session" 2>/dev/null || true
  release_holders
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up


# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf '%-8s %-8s %-14s %-11s %-15s %-15s %-13s %s\n' sockets "churn/s" "transitions/s" \
  "cpu_%_core" "refresh_avg_ms" "refresh_max_ms" "frame_avg_ms" "frame_max_ms"
held=0
hz=$(getconf CLK_TCK)
for size in $SIZES; do
  hold "$ns" $(( (size - held) / 2 ))
  held=$size
  tmux kill-session -t "$session" 2>/dev/null || true
  tmux new-session -d -s "$session" -x 160 -y 45 \
    "$tool --top --netns $ns -v 2> $work/stderr; sleep 600"
  until tmux capture-pane -p -t "$session" | grep -q CONNECTIONS; do sleep 0.2; done
  pid=$(pgrep -f "^$tool --top --netns $ns" | head -1)
  sleep 2
  before=$(cpu_ticks "$pid")
  ip netns exec "$ns" "$churn" --rate "$RATE" --seconds "$SECONDS_PER_RUN" --threads 1 \
    > "$work/churn"
  after=$(cpu_ticks "$pid")
  rate=$(tmux capture-pane -p -t "$session" | head -1 | grep -o '[0-9]* transitions/s' |
    grep -o '^[0-9]*')
  tmux send-keys -t "$session" q
  until grep -q "snapshots shown" "$work/stderr" 2>/dev/null; do sleep 0.2; done
  summary=$(grep "snapshots shown" "$work/stderr")
  figure() { echo "$summary" | grep -o "$1 took [0-9.]* ms on average, [0-9.]* ms at most" |
    grep -o '[0-9.]\+' | sed -n "$2p"; }
  share=$(echo "scale=2; ($after - $before) * 100 / $hz / $SECONDS_PER_RUN" | bc)
  printf '%-8s %-8s %-14s %-11s %-15s %-15s %-13s %s\n' "$size" "$RATE" "$rate" "$share" \
    "$(figure refreshes 1)" "$(figure refreshes 2)" "$(figure frames 1)" "$(figure frames 2)"
done
