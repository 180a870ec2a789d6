// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Kernel side of tcpstates: report every TCP state transition with the socket's owner.
 *
 * Hooks are BTF tracepoints only (no tracefs, kprobes or fentry):
 *   inet_sock_set_state  every state change of a full socket            transitions.bpf.c
 *   kmem_cache_free      a timewait socket freed = TIME_WAIT ends        timewait.bpf.c
 *   tcp_rcv_space_adjust, fexit inet_csk_accept, sched_process_fork
 *                        who holds a socket between transitions          holders.bpf.c
 * and, when asked for (--events, --lifetimes, snapshots):
 *   tcp_send_reset, tcp_receive_reset, tcp_retransmit_skb, kfree_skb     notices.bpf.c
 * a program user space runs every 100 ms, for the moves no hook sees:  sweep.bpf.c
 * and two iterators, run at start:                                     iterators.bpf.c
 *   iter/task_file       owners of the sockets that already exist, as `ss -p` finds them
 *   iter/tcp             the sockets that exist now, for snapshots
 * The program collects; user space decodes, times and formats.
 *
 * One translation unit, so one object and one skeleton: the parts are included below, each
 * after what it uses. Which programs load is chosen by user space (autoload), per kernel.
 */
#include "vmlinux_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpstates.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Unused; make the skeleton generate the record types (types::event, ...) and the shared
 * constants (types::record_kind, ...) for the Rust side.
 */
struct event event_layout = {};
struct socket_record socket_record_layout = {};
struct event_with_stats event_with_stats_layout = {};
struct owner_record owner_record_layout = {};
struct listener_owner listener_owner_layout = {};
struct listener_key listener_key_layout = {};
enum record_kind record_kind_layout = EVENT_TRANSITION;
enum record_flags record_flags_layout = EVENT_F_OWNER_KNOWN;
enum conn_flags conn_flags_layout = CONN_F_LOCAL_CLOSED_FIRST;
enum counter_index counter_index_layout = LOST_RING;
enum tw_free_match tw_free_match_layout = TW_FREE_BY_CACHE;
enum sweep_limits sweep_limits_layout = SWEEP_BATCH;

/* Filters, set by user space before load; zero means off. */
const volatile __u16 filter_family = 0;
const volatile bool filter_lports = false;
const volatile bool filter_rports = false;
const volatile __u32 filter_pid = 0;
const volatile bool filter_comm_on = false;
const volatile char filter_comm[TASK_COMM_LEN] = {};
const volatile __u64 filter_cgroup = 0;
const volatile __u32 filter_netns = 0;
const volatile __u32 filter_states = 0; /* bit (1 << state) */
/* Wake the consumer only once this much data waits; it also polls on a timer. */
const volatile __u64 wakeup_bytes = 0;
/* Every record carries a struct conn_stats, filled when the connection ended (lifetimes). */
const volatile bool with_stats = false;
/* Only the transitions that end a connection are wanted (--lifetimes). */
const volatile bool final_only = false;
/* dump_sockets reads each connection's RTT, retransmits and unacknowledged data (-i). */
const volatile bool socket_figures = false;
/* Kinds other than transitions to stream: bit (1 << EVENT_*). */
const volatile __u32 notice_kinds = 0;
/*
 * One-shot snapshots: no hooks are loaded. seed_owners then writes every socket file it finds
 * without reading the socket, and dump_sockets leaves the pid and comm filters, which need the
 * owner, to user space.
 */
const volatile bool one_shot = false;

/*
 * Per-socket data lives in socket storage where tracing programs may use it (5.11 on), else in
 * the socks_by_addr hash. User space sets this from a probe program.
 */
const volatile bool socket_storage = true;

/*
 * How on_cache_free knows the free of a timewait socket, from the arguments the kernel's
 * kmem_cache_free tracepoint has (user space reads them in the kernel's BTF).
 */
const volatile __u32 tw_free_match = TW_FREE_BY_CACHE;
/* on_cache_free_by_site, for (call_site, ptr): a free called from [start, end). */
const volatile __u64 tw_free_site_start = 0;
const volatile __u64 tw_free_site_end = 0;


#include "maps.bpf.h"
#include "owners.bpf.h"
#include "common.bpf.h"
#include "sweep.bpf.c"
#include "timewait.bpf.c"
#include "transitions.bpf.c"
#include "holders.bpf.c"
#include "notices.bpf.c"
#include "iterators.bpf.c"
