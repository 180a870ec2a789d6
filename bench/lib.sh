# Sourced by the benchmarks: loopback connection pairs held open in namespace $ns. `hold PAIRS`
# adds that many pairs (2 sockets each), held by `tcp_peer pairs` processes ($peer) of at most
# PER_PROCESS pairs each (the open-file limit is 20k); `release_holders` closes them all.
# Needs $ns (made), $peer and $work (a temporary folder).

PER_PROCESS=${PER_PROCESS:-9000}
holders=()
# The holders' stdin: open here for writing, so they wait until release_holders closes it.
mkfifo "$work/stdin"
exec 3<> "$work/stdin"

hold() {
  local pairs=$1
  while (( pairs > 0 )); do
    local n=$(( pairs < PER_PROCESS ? pairs : PER_PROCESS ))
    local out=$work/holder.${#holders[@]}
    ip netns exec "$ns" "$peer" pairs 127.0.0.1 "$n" < "$work/stdin" > "$out" &
    holders+=($!)
    until grep -q ready "$out" 2>/dev/null; do sleep 0.1; done
    pairs=$(( pairs - n ))
  done
}

release_holders() {
  exec 3>&- # the holders read EOF and close their connections
  for pid in "${holders[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
