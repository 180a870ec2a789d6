# Sourced by the benchmarks (functions only). Needs $work (a temporary folder) and, to hold
# connections, $peer (tcp_peer).

holders=()

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

# `hold NS PAIRS`: that many loopback connection pairs (2 sockets each) held open in namespace
# NS by `tcp_peer pairs` processes of at most PER_PROCESS pairs each (the open-file limit is
# 20k), until release_holders.
PER_PROCESS=${PER_PROCESS:-9000}
hold() {
  local ns=$1 pairs=$2
  if [ ! -p "$work/stdin" ]; then
    # The holders' stdin: open here for writing, so they wait until release_holders closes it.
    mkfifo "$work/stdin"
    exec 3<> "$work/stdin"
  fi
  while (( pairs > 0 )); do
    local n=$(( pairs < PER_PROCESS ? pairs : PER_PROCESS ))
    local out=$work/holder.${#holders[@]}
    ip netns exec "$ns" "$peer" pairs 127.0.0.1 "$n" < "$work/stdin" > "$out" &
    holders+=($!)
    until grep -q ready "$out" 2>/dev/null; do sleep 0.05; done
    pairs=$(( pairs - n ))
  done
}

release_holders() {
  exec 3>&- # the holders read EOF and close their connections
  for pid in "${holders[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
