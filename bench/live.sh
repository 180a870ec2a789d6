#!/usr/bin/env bash
# Live-mode benchmark against Debian's libbpf-tools tcpstates (when installed), as root:
#
#   sudo bench/live.sh            # 20k conn/s and as fast as possible, 5 s each, 3 rounds
#   sudo bench/live.sh --quick    # a few seconds: checks the benchmark still runs (CI)
#   sudo bench/live.sh --rates 10000,max --seconds 10 --rounds 5
#   sudo bench/live.sh --no-bpf-stats   # as users run: the kernel's BPF statistics off, whose
#                                       # clock reads every program run pays (no kernel ns column)
#   sudo bench/live.sh --floor    # adds programs that do nothing, only count, or only write a
#                                 # record to a ring buffer, on the same hooks
#   sudo bench/live.sh --baseline /path/to/older/tcpstates   # that build too, in the same run
#   sudo bench/live.sh --no-messages   # without the data-heavy rows (small messages on a few
#                                      # long connections, for the hooks on reads and writes)
#
# Interleaves no tracer, tcpstates -o json, tcpstates text and libbpf-tools in one run and
# prints medians: achieved connections/s and slowdown against no tracer, events expected,
# captured, lost (as the tool reported) and skipped by the kernel (BPF recursion), the kernel's
# BPF run time per event (kernel.bpf_stats_enabled), the tool's CPU per million events, its
# peak RSS and the time from exec to its first event, and the changes the state tracepoint never
# reported to the tracer ("untraced", with the statistics on).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin tcpstates --example churn --example messages --example bench_live
clang -O2 -g -Wall -Werror -target bpf -c bench/floor.bpf.c -o target/release/examples/floor.bpf.o
exec target/release/examples/bench_live "$@"
