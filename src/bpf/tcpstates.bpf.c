// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Kernel side of tcpstates: report every TCP state transition with the socket's owner.
 *
 * Hooks are BTF tracepoints only (no tracefs, kprobes or fentry):
 *   inet_sock_set_state  every state change of a full socket
 *   kmem_cache_free      a timewait socket freed = TIME_WAIT ends (expired or killed)
 * and, when asked for (--events, --lifetimes, snapshots):
 *   tcp_send_reset, tcp_receive_reset, tcp_retransmit_skb, kfree_skb (TCP drops)
 * and two iterators, run at start:
 *   iter/task_file       owners of the sockets that already exist, as `ss -p` finds them
 *   iter/tcp             the sockets that exist now, for snapshots
 * The program collects; user space decodes, times and formats.
 */
#include "vmlinux_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpstates.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Unused; make the skeleton generate the record types (types::event, ...) for the Rust side. */
struct event event_layout = {};
struct socket_record socket_record_layout = {};
struct event_with_stats event_with_stats_layout = {};
struct owner_record owner_record_layout = {};
struct listener_owner listener_owner_layout = {};
struct listener_key listener_key_layout = {};

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
#define TW_FREE_BY_CACHE 1 /* (call_site, ptr, cache): the timewait sockets' cache */
#define TW_FREE_BY_NAME 2  /* (call_site, ptr, name): that cache's name, the same pointer */
const volatile __u32 tw_free_match = TW_FREE_BY_CACHE;
/* on_cache_free_by_site, for (call_site, ptr): a free called from [start, end). */
const volatile __u64 tw_free_site_start = 0;
const volatile __u64 tw_free_site_end = 0;

/*
 * Learned from the first TIME_WAIT takeover: the timewait sockets' slab caches (IPv4, IPv6)
 * and their names. Not taken from kallsyms, which shows zeros without CAP_SYSLOG and takes
 * ~40 ms to read.
 */
__u64 tw_slab[2] = {};
__u64 tw_slab_name[2] = {};

#define SOCK_F_CGROUP_MATCH (1 << 7) /* the socket's cgroup is inside filter_cgroup */
/*
 * LISTEN -> SYN_RECV fires inside inet_csk_clone_lock() before the child gets its addresses and
 * ports, so it is reported with the child's next transition, which follows on the same CPU.
 */
#define SOCK_F_SYN_RECV_DEFERRED (1 << 6)
/* Bits 2..5 are CONN_F_* shifted by SOCK_F_CONN_SHIFT. */
#define SOCK_F_CONN_SHIFT 2
#define SOCK_F_LOCAL_CLOSED_FIRST (CONN_F_LOCAL_CLOSED_FIRST << SOCK_F_CONN_SHIFT)
#define SOCK_F_REMOTE_CLOSED_FIRST (CONN_F_REMOTE_CLOSED_FIRST << SOCK_F_CONN_SHIFT)
#define SOCK_F_RESET_SENT (CONN_F_RESET_SENT << SOCK_F_CONN_SHIFT)
#define SOCK_F_PASSIVE (CONN_F_PASSIVE << SOCK_F_CONN_SHIFT)
#define MAX_CGROUP_DEPTH 32

/* What is known of a socket: in a full socket's storage, or keyed by timewait socket. */
struct sock_info {
	__u64 ts_ns;  /* when it entered its current state */
	__u64 cgroup;
	__u64 skaddr; /* the full socket (kept for its timewait successor) */
	__u64 born_ns; /* when its connection started; 0 = unknown */
	__u32 pid;
	__u8 flags; /* EVENT_F_* and SOCK_F_* */
	__u8 tw_state; /* of a timewait socket: the state last reported, FIN_WAIT2 or TIME_WAIT */
	__u8 pad[2];
	char comm[TASK_COMM_LEN];
};

/* Map sizes are documented in the README and the man page. */
/*
 * Per full socket, in the socket itself: freed by the kernel with it, so it needs no size limit
 * and no eviction. An accepted socket starts with a copy of its listener's (BPF_F_CLONE): the
 * listener's owner, exactly, SO_REUSEPORT groups included.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sock_info);
} socks SEC(".maps");

/*
 * The same, by socket address, where tracing programs have no socket storage (before 5.11).
 * An entry goes at its socket's last transition; sized by user space (1 with socket storage).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by user space */
	__type(key, __u64);
	__type(value, struct sock_info);
} socks_by_addr SEC(".maps");

/*
 * Without socket storage: the sockets that closed last, for an RST sent just after the close
 * (possibly on another CPU: the closing task may move). The oldest make room.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1); /* set by user space */
	__type(key, __u64);
	__type(value, struct sock_info);
} closed_socks SEC(".maps");

/*
 * Per timewait socket, from its takeover to its free. Sized by user space to the kernel's own
 * limit; entries are allocated as needed. A full map refuses new entries, counted as
 * TW_UNTRACKED, rather than silently forgetting old ones as an LRU map would. An entry whose
 * free was not seen (its hook skipped by recursion) is overwritten when the slab reuses the
 * address, which it does quickly.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* set by user space */
	__type(key, __u64);
	__type(value, struct sock_info);
} tws SEC(".maps");

/*
 * Timewait sockets reported in FIN_WAIT2 (an orphaned connection whose peer has not closed),
 * for the sweep that sees the peer's FIN move them to TIME_WAIT. A key stays until its socket
 * is freed; the sweep skips the ones that have moved. Sized by user space, as tws.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* set by user space */
	__type(key, __u64);
	__type(value, __u8);
} fin_wait2_tws SEC(".maps");

/*
 * The owners of the sockets that existed at start, from the task_file walk, written by user
 * space after the hooks are attached. A socket takes its owner from here the first time it is
 * seen without one, which removes the entry: the map only shrinks. Sized by user space to the
 * kernel's count of TCP sockets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by user space */
	__type(key, __u64);
	__type(value, struct owner);
} seeds SEC(".maps");

/*
 * Owners of listeners by namespace and port, for the accepted children of a listener whose own
 * storage has no owner (it existed at start). A listener's entry goes when it closes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by user space */
	__type(key, struct listener_key);
	__type(value, struct listener_owner);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} lports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} rports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20); /* set by user space: --ring-size */
} events SEC(".maps");

/*
 * Per CPU: [LOST_RING] records the ring had no room for; [NESTED_HANDLED] see
 * on_set_state_nested; [TW_UNTRACKED] timewait sockets the full tws map had no room for.
 */
#define LOST_RING 0
#define NESTED_HANDLED 1
#define TW_UNTRACKED 2
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* One load the compiler may not merge or reorder with the other such loads. */
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

/* A state change, as on_set_state_nested recognises it. */
struct change {
	__u64 sk;
	__u64 states; /* oldstate << 8 | newstate */
};

/* Per CPU: the last two changes on_set_state started on, newest in [1]. */
struct recent_changes {
	struct change taken[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct recent_changes);
} set_state_taken SEC(".maps");

static __always_inline bool comm_matches(const char *comm)
{
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline bool owner_wanted(const struct sock_info *info, bool owner_known_here)
{
	bool known = info->flags & EVENT_F_OWNER_KNOWN;

	if (owner_known_here && filter_pid && (!known || info->pid != filter_pid))
		return false;
	if (owner_known_here && filter_comm_on && (!known || !comm_matches(info->comm)))
		return false;
	if (filter_cgroup && !(info->flags & SOCK_F_CGROUP_MATCH))
		return false;
	return true;
}

/* The filters that do not depend on the state; the owner's only where it is known here. */
static __always_inline bool socket_wanted_as(__u16 family, __u16 lport, __u16 rport, __u32 netns,
					     const struct sock_info *info, bool owner_known_here)
{
	if (filter_family && family != filter_family)
		return false;
	if (filter_netns && netns != filter_netns)
		return false;
	if (filter_lports && !bpf_map_lookup_elem(&lports, &lport))
		return false;
	if (filter_rports && !bpf_map_lookup_elem(&rports, &rport))
		return false;
	return owner_wanted(info, owner_known_here);
}

/* The filters that do not depend on the state. */
static __always_inline bool socket_wanted(__u16 family, __u16 lport, __u16 rport, __u32 netns,
					  const struct sock_info *info)
{
	return socket_wanted_as(family, lport, rport, netns, info, true);
}

/* Both addresses of a full or timewait socket, into 16-byte buffers zeroed past their length. */
static __always_inline void read_addresses(const struct sock_common *skc, __u16 family, __u8 *saddr,
					   __u8 *daddr)
{
	__builtin_memset(saddr, 0, 16);
	__builtin_memset(daddr, 0, 16);
	if (family == AF_INET) {
		bpf_core_read(saddr, 4, &skc->skc_rcv_saddr);
		bpf_core_read(daddr, 4, &skc->skc_daddr);
	} else {
		bpf_core_read(saddr, 16, &skc->skc_v6_rcv_saddr);
		bpf_core_read(daddr, 16, &skc->skc_v6_daddr);
	}
}

/* The same, from a typed (BTF) socket pointer: plain loads instead of probe helpers. */
static __always_inline void copy_addresses(const struct sock_common *skc, __u16 family, __u8 *saddr,
					   __u8 *daddr)
{
	if (family == AF_INET) {
		__builtin_memset(saddr, 0, 16);
		__builtin_memset(daddr, 0, 16);
		__builtin_memcpy(saddr, &skc->skc_rcv_saddr, 4);
		__builtin_memcpy(daddr, &skc->skc_daddr, 4);
	} else {
		__builtin_memcpy(saddr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(daddr, &skc->skc_v6_daddr, 16);
	}
}

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&lost, &what);

	if (n)
		*n += 1;
}

/*
 * The figures of a connection that ends now, leaving oldstate; tp is its typed socket.
 * The FIN flags let user space count payload bytes only.
 */
static __always_inline void fill_stats(struct conn_stats *s, const struct tcp_sock *tp,
				       int oldstate, const struct sock_info *info)
{
	__u32 min_rtt;

	__builtin_memset(s, 0, sizeof(*s));
	s->born_ns = info->born_ns;
	s->flags = (info->flags >> SOCK_F_CONN_SHIFT) & 0xf;
	if (((const struct sock *)tp)->__sk_common.skc_flags & (1UL << SOCK_DONE))
		s->flags |= CONN_F_FIN_RECEIVED;
	/* A FIN was sent in these states; all queued, FIN included, acked when snd_una caught up. */
	if ((oldstate == TCP_FIN_WAIT1 || oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING ||
	     oldstate == TCP_LAST_ACK) &&
	    tp->snd_una == tp->write_seq)
		s->flags |= CONN_F_FIN_ACKED;
	s->bytes_acked = tp->bytes_acked;
	s->bytes_received = tp->bytes_received;
	s->bytes_sent = tp->bytes_sent;
	s->bytes_retrans = tp->bytes_retrans;
	s->segs_out = tp->segs_out;
	s->segs_in = tp->segs_in;
	s->total_retrans = tp->total_retrans;
	s->srtt_us = tp->srtt_us >> 3;
	min_rtt = tp->rtt_min.s[0].v;
	s->min_rtt_us = min_rtt == ~0U ? 0 : min_rtt;
}

/* Bytes a record takes in the ring: its header (8) and its size, rounded up to 8. */
#define RECORD_BYTES ((with_stats ? sizeof(struct event_with_stats) : sizeof(struct event)) + 8)

/* When submit() last woke the reader for a record that found the ring empty. */
__u64 prompt_wakeup_ns = 0;
#define PROMPT_WAKEUP_GAP_NS 50000000

/*
 * Each wakeup is a self-IPI (a VM exit under virtualisation), so the reader is woken only
 *  - when the unread data crosses wakeup_bytes: once per fill, not for every record past it;
 *  - for a record that finds the ring empty, at most once every 50 ms: the first event after a
 *    quiet spell shows at once rather than at the reader's next 10 ms poll, and a busy host pays
 *    at most 20 such wakeups a second (at 1 ms, the wakeups cost a fifth of the kernel time).
 * A wakeup missed in a race between CPUs costs only latency: the reader also polls every 10 ms.
 */
static __always_inline void submit(void *record, __u64 now)
{
	__u64 unread = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	if (unread >= wakeup_bytes && unread < wakeup_bytes + RECORD_BYTES) {
		bpf_ringbuf_submit(record, BPF_RB_FORCE_WAKEUP);
	} else if (unread <= RECORD_BYTES && now - prompt_wakeup_ns >= PROMPT_WAKEUP_GAP_NS) {
		prompt_wakeup_ns = now;
		bpf_ringbuf_submit(record, BPF_RB_FORCE_WAKEUP);
	} else {
		bpf_ringbuf_submit(record, BPF_RB_NO_WAKEUP);
	}
}

/*
 * A ring record: an event, with room for a struct conn_stats in lifetimes and snapshot modes.
 * The size is a load-time constant, so the verifier sees a single layout.
 */
static __always_inline struct event *reserve(void)
{
	struct event *e;

	if (with_stats)
		e = bpf_ringbuf_reserve(&events, sizeof(struct event_with_stats), 0);
	else
		e = bpf_ringbuf_reserve(&events, sizeof(struct event), 0);
	if (!e)
		count(LOST_RING);
	return e;
}

/*
 * Filter, then write one transition to the ring buffer. skc is a full socket given to a hook
 * (typed: `typed` true, read directly) or a timewait socket (read with probe helpers). ended is
 * the tcp_sock when this transition ends its connection, else NULL.
 */
static __always_inline void emit(int kind, const struct sock_common *skc, bool typed, __be16 sport,
				 __u32 netns, __u64 skaddr, __u64 twaddr, int oldstate, int newstate,
				 __u64 prev_ts, __u64 now, const struct sock_info *info,
				 const struct tcp_sock *ended)
{
	__u16 lport = bpf_ntohs(sport);
	__u16 family, rport;
	struct event *e;

	if (final_only && !ended)
		return;
	if (filter_states && !(filter_states & ((1u << oldstate) | (1u << newstate))))
		return;
	if (typed) {
		family = skc->skc_family;
		rport = bpf_ntohs(skc->skc_dport);
	} else {
		family = BPF_CORE_READ(skc, skc_family);
		rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	}
	if (!socket_wanted(family, lport, rport, netns, info))
		return;

	e = reserve();
	if (!e)
		return;
	e->ts_ns = now;
	e->prev_ts_ns = prev_ts;
	e->skaddr = skaddr;
	e->twaddr = twaddr;
	e->cgroup = info->cgroup;
	e->netns = netns;
	e->pid = info->pid;
	__builtin_memcpy(e->comm, info->comm, TASK_COMM_LEN);
	if (typed)
		copy_addresses(skc, family, e->saddr, e->daddr);
	else
		read_addresses(skc, family, e->saddr, e->daddr);
	e->sport = lport;
	e->dport = rport;
	e->family = family;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->flags = info->flags & (EVENT_F_OWNER_KNOWN | EVENT_F_CGROUP_KNOWN);
	e->kind = kind;
	e->error = ended ? ((const struct sock *)ended)->sk_err : 0;
	e->detail = 0;
	if (with_stats) {
		struct conn_stats *stats = &((struct event_with_stats *)e)->stats;

		if (ended) {
			e->flags |= EVENT_F_STATS;
			fill_stats(stats, ended, oldstate, info);
		} else {
			__builtin_memset(stats, 0, sizeof(*stats));
		}
	}
	submit(e, now);
}

/* Is cg filter_cgroup or one of its descendants? */
static __always_inline bool cgroup_inside_filter(struct cgroup *cg)
{
	int level = BPF_CORE_READ(cg, level);
	struct cgroup **ancestors;

	/* Older kernels have no ancestors[]: match the socket's own cgroup only. */
	if (!bpf_core_field_exists(cg->ancestors))
		return BPF_CORE_READ(cg, kn, id) == filter_cgroup;
	ancestors = (struct cgroup **)((void *)cg + bpf_core_field_offset(cg->ancestors));
	for (int i = 0; i < MAX_CGROUP_DEPTH; i++) {
		struct cgroup *ancestor = NULL;

		if (i > level)
			break;
		bpf_probe_read_kernel(&ancestor, sizeof(ancestor), &ancestors[i]);
		if (ancestor && BPF_CORE_READ(ancestor, kn, id) == filter_cgroup)
			return true;
	}
	return false;
}

/*
 * Typed reads of a full socket go through the tcp_sock that bpf_skc_to_tcp_sock() returns, not
 * the hook's own argument: a typed load of a pointer (skc_net.net, sk_cgrp_data.cgroup) from a
 * hook's trusted argument costs the verifier a linear search of the kernel's BTF on every path
 * that reaches it, which made loading several times slower.
 */
static __always_inline __u32 socket_netns(const struct tcp_sock *tp)
{
	return ((const struct sock *)tp)->__sk_common.skc_net.net->ns.inum;
}

/* The socket's own cgroup (set at creation, inherited by accepted children), never the task's. */
static __always_inline void set_cgroup(struct sock_info *info, const struct tcp_sock *tp)
{
	const struct sock *sk = (const struct sock *)tp;
	struct cgroup *cg;

	/* Older kernels packed the socket's cgroup differently: leave it unknown there. */
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return;
	cg = sk->sk_cgrp_data.cgroup;
	if (!cg)
		return;
	info->cgroup = cg->kn->id;
	info->flags |= EVENT_F_CGROUP_KNOWN;
	if (filter_cgroup && cgroup_inside_filter(cg))
		info->flags |= SOCK_F_CGROUP_MATCH;
}

static __always_inline void take_owner(struct sock_info *info, const struct owner *owner)
{
	info->pid = owner->pid;
	__builtin_memcpy(info->comm, owner->comm, TASK_COMM_LEN);
	info->flags |= EVENT_F_OWNER_KNOWN;
}

/* A socket that existed at start: its owner as the task_file walk found it, if it did. */
static __always_inline void adopt_seed(struct sock_info *info, __u64 skaddr, bool consume)
{
	struct owner *seed = bpf_map_lookup_elem(&seeds, &skaddr);

	if (!seed)
		return;
	take_owner(info, seed);
	if (consume) /* the socket keeps it in its own storage from now on */
		bpf_map_delete_elem(&seeds, &skaddr);
}

static __always_inline struct listener_key listener_at(__u32 netns, __be16 sport)
{
	struct listener_key key = { .netns = netns, .lport = bpf_ntohs(sport) };

	return key;
}

/* An accepted child of a listener whose owner its storage did not hold. */
static __always_inline void adopt_listener_owner(struct sock_info *info, __u32 netns,
						 __be16 sport)
{
	struct listener_key key = listener_at(netns, sport);
	struct listener_owner *listener = bpf_map_lookup_elem(&listeners, &key);

	if (listener)
		take_owner(info, &listener->owner);
}

/* A listener closed: its place no longer names its owner. */
static __always_inline void forget_listener(__u32 netns, __be16 sport, __u64 skaddr)
{
	struct listener_key key = listener_at(netns, sport);
	struct listener_owner *listener = bpf_map_lookup_elem(&listeners, &key);

	if (listener && listener->skaddr == skaddr)
		bpf_map_delete_elem(&listeners, &key);
}

static __always_inline void set_owner_current(struct sock_info *info)
{
	info->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(info->comm, sizeof(info->comm));
	info->flags |= EVENT_F_OWNER_KNOWN;
}

/*
 * What is kept of the full socket sk, created empty if asked for and missing; NULL if there
 * is none (or no memory). Socket storage where the kernel gives it to tracing programs, else
 * the hash; the verifier never walks the branch not taken, so either kernel loads this.
 */
static __always_inline struct sock_info *socket_info(const struct sock *sk, bool create)
{
	static const struct sock_info empty = {};
	__u64 skaddr = (__u64)sk;
	struct sock_info *info;

	if (socket_storage)
		return bpf_sk_storage_get(&socks, (void *)sk, 0,
					  create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
	info = bpf_map_lookup_elem(&socks_by_addr, &skaddr);
	if (info || !create)
		return info;
	bpf_map_update_elem(&socks_by_addr, &skaddr, &empty, BPF_NOEXIST);
	return bpf_map_lookup_elem(&socks_by_addr, &skaddr);
}

/*
 * Without socket storage, sk's entry goes at its last transition (socket storage goes with the
 * socket); what it held moves to closed_socks for an RST the socket sends right after.
 */
static __always_inline void socket_closed(const struct sock *sk, const struct sock_info *info)
{
	__u64 skaddr = (__u64)sk;

	if (socket_storage)
		return;
	bpf_map_update_elem(&closed_socks, &skaddr, info, BPF_ANY);
	bpf_map_delete_elem(&socks_by_addr, &skaddr);
}

/*
 * Without socket storage: what is kept of the listener that the new child tp was cloned from.
 * The clone copied the listener's tsq_node, an empty list that points at the listener itself,
 * and tcp_create_openreq_child() resets it only after this tracepoint. The address is trusted
 * only if it is a listener's entry: else the child takes its owner by place.
 */
static __always_inline struct sock_info *listener_of_child(const struct tcp_sock *tp)
{
	__u64 listener = (__u64)BPF_CORE_READ(tp, tsq_node.next) -
			 bpf_core_field_offset(struct tcp_sock, tsq_node);
	struct sock_info *info = bpf_map_lookup_elem(&socks_by_addr, &listener);

	return info && info->skaddr == listener ? info : NULL;
}

/* A listener opened: without socket storage, its children find its owner by its place. */
static __always_inline void remember_listener(const struct sock_info *info, __u32 netns,
					      __be16 sport, __u64 skaddr)
{
	struct listener_key key = listener_at(netns, sport);
	struct listener_owner listener = { .skaddr = skaddr };

	if (socket_storage || !sport)
		return;
	listener.owner.pid = info->pid;
	__builtin_memcpy(listener.owner.comm, info->comm, TASK_COMM_LEN);
	bpf_map_update_elem(&listeners, &key, &listener, BPF_ANY);
}

/* What places a socket in the established hash: its timewait successor has the same. */
struct hash_identity {
	__u64 net;
	__u32 hash;
	__be16 sport;
	__be16 dport;
	__u16 family;
};

/* Does the timewait socket tw have the identity id? */
static __always_inline bool tw_replaces(__u64 tw, const struct hash_identity *id)
{
	const struct inet_timewait_sock *t = (const void *)tw;

	return BPF_CORE_READ(t, __tw_common.skc_state) == TCP_TIME_WAIT &&
	       BPF_CORE_READ(t, __tw_common.skc_hash) == id->hash &&
	       BPF_CORE_READ(t, tw_sport) == id->sport &&
	       BPF_CORE_READ(t, __tw_common.skc_dport) == id->dport &&
	       BPF_CORE_READ(t, __tw_common.skc_family) == id->family &&
	       (__u64)BPF_CORE_READ(t, __tw_common.skc_net.net) == id->net;
}

/* Timewait sockets looked at in a hash bucket; the one sought is normally the first. */
#define TW_BUCKET_SCAN 4

/*
 * tcp_time_wait() puts a new timewait socket at the head of sk's bucket of the established hash,
 * in sk's place, and then closes sk. So a socket that reaches CLOSE already unhashed (an
 * ordinary close unhashes after this tracepoint) may have a successor there: return it, or 0.
 * The full socket is read with plain loads through its tcp_sock; the hash chain and the
 * timewait sockets, which no hook argument types, with probe reads.
 */
static __always_inline __u64 take_timewait_successor(const struct tcp_sock *tp, __be16 sport)
{
	const struct sock_common *skc = &((const struct sock *)tp)->__sk_common;
	struct inet_hashinfo *hashinfo = NULL;
	struct inet_ehash_bucket *bucket;
	struct hlist_nulls_node *node;
	struct hash_identity id;
	__u32 index;

	if (skc->skc_nulls_node.pprev)
		return 0;
	if (bpf_core_field_exists(struct net, ipv4.tcp_death_row.hashinfo))
		hashinfo = skc->skc_net.net->ipv4.tcp_death_row.hashinfo;
	if (!hashinfo)
		hashinfo = skc->skc_prot->h.hashinfo;
	if (!hashinfo)
		return 0;
	id.hash = skc->skc_hash;
	id.sport = sport;
	id.dport = skc->skc_dport;
	id.family = skc->skc_family;
	id.net = (__u64)BPF_CORE_READ(skc, skc_net.net);
	index = id.hash & hashinfo->ehash_mask;
	bucket = (void *)BPF_CORE_READ(hashinfo, ehash) + index * sizeof(struct inet_ehash_bucket);
	/* Not CO-RE reads: these list types are the same in every kernel (vmlinux_core.h). */
	bpf_probe_read_kernel(&node, sizeof(node), &bucket->chain.first);
	for (int i = 0; i < TW_BUCKET_SCAN; i++) {
		__u64 tw;

		if (!node || ((__u64)node & 1)) /* the end of a nulls list is an odd marker */
			return 0;
		tw = (__u64)node - bpf_core_field_offset(struct sock_common, skc_nulls_node);
		if (tw_replaces(tw, &id)) {
			int v6 = id.family == AF_INET6;

			if (!tw_slab[v6]) {
				struct kmem_cache *slab = skc->skc_prot->twsk_prot->twsk_slab;

				tw_slab_name[v6] = (__u64)BPF_CORE_READ(slab, name);
				tw_slab[v6] = (__u64)slab;
			}
			return tw;
		}
		bpf_probe_read_kernel(&node, sizeof(node), &node->next);
	}
	return 0;
}

static __always_inline void handle_set_state(const struct sock *sk, int oldstate, int newstate)
{
	__u64 skaddr = (__u64)sk;
	__u64 now, prev_ts, tw = 0;
	int reported, kind;
	struct sock_info fresh = {};
	struct sock_info *info;
	struct tcp_sock *tp;
	__be16 sport;
	__u32 netns;

	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	/* Typed loads through the tcp_sock: cheaper than probe reads on every transition. */
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return; /* not a full socket: never the case for a state change */
	now = bpf_ktime_get_boot_ns();
	netns = socket_netns(tp);
	sport = ((struct inet_sock *)tp)->inet_sport;
	info = socket_info(sk, true);
	if (!info)
		info = &fresh; /* no memory: report what can be, remember nothing */

	if (oldstate == TCP_CLOSE && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)) {
		/* connect() and listen() run in the owner's context; older contents are a past use. */
		__builtin_memset(info, 0, sizeof(*info));
		set_owner_current(info);
		set_cgroup(info, tp);
		info->born_ns = newstate == TCP_SYN_SENT ? now : 0;
		info->skaddr = skaddr;
		if (newstate == TCP_LISTEN)
			remember_listener(info, netns, sport, skaddr);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV) {
		/* A new child, its storage a copy of its listener's (socket storage only, else a
		 * past use's): keep the owner only. */
		info->flags &= socket_storage ? EVENT_F_OWNER_KNOWN : 0;
		set_cgroup(info, tp);
		info->ts_ns = now;
		info->born_ns = now;
		info->skaddr = skaddr;
		info->flags |= SOCK_F_SYN_RECV_DEFERRED | SOCK_F_PASSIVE;
		if (!socket_storage) {
			struct sock_info *listener = listener_of_child(tp);

			if (listener && (listener->flags & EVENT_F_OWNER_KNOWN)) {
				info->pid = listener->pid;
				__builtin_memcpy(info->comm, listener->comm, TASK_COMM_LEN);
				info->flags |= EVENT_F_OWNER_KNOWN;
			}
		}
		if (!(info->flags & EVENT_F_OWNER_KNOWN))
			adopt_listener_owner(info, netns, sport);
		return;
	} else if (info->skaddr != skaddr) {
		/* First seen mid-life: time in oldstate unknown; an owner only if cloned. */
		info->flags &= EVENT_F_OWNER_KNOWN;
		info->ts_ns = 0;
		info->born_ns = 0;
		info->skaddr = skaddr;
		set_cgroup(info, tp);
	}

	if (!(info->flags & EVENT_F_OWNER_KNOWN))
		adopt_seed(info, skaddr, info != &fresh);
	if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE)
		forget_listener(netns, sport, skaddr);

	/* Who sent the first FIN. */
	if ((newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT) &&
	    !(info->flags & (SOCK_F_LOCAL_CLOSED_FIRST | SOCK_F_REMOTE_CLOSED_FIRST)))
		info->flags |= newstate == TCP_FIN_WAIT1 ? SOCK_F_LOCAL_CLOSED_FIRST :
							    SOCK_F_REMOTE_CLOSED_FIRST;

	prev_ts = info->ts_ns;
	if (info->flags & SOCK_F_SYN_RECV_DEFERRED) {
		info->flags &= ~SOCK_F_SYN_RECV_DEFERRED;
		emit(EVENT_TRANSITION, &sk->__sk_common, true, sport, netns, skaddr, 0, TCP_LISTEN,
		     TCP_SYN_RECV, 0,
		     prev_ts, info, NULL);
	}
	info->ts_ns = now;

	/* One emit call site: each is inlined, and verified again, in both programs. */
	reported = newstate;
	kind = EVENT_TRANSITION;
	if (newstate == TCP_CLOSE) {
		tw = take_timewait_successor(tp, sport);
		if (tw) {
			/* The connection lives on as the timewait socket: hand it what we know. An
			 * orphaned socket whose peer has not closed stays in FIN_WAIT2 there (as ss
			 * shows it): a handover, not a transition. */
			struct sock_info handed = *info;
			__u8 substate = BPF_CORE_READ((struct inet_timewait_sock *)tw, tw_substate);

			if (oldstate == TCP_FIN_WAIT2 && substate == TCP_FIN_WAIT2) {
				handed.ts_ns = prev_ts;
				kind = EVENT_HANDOVER;
				reported = TCP_FIN_WAIT2;
			} else {
				reported = TCP_TIME_WAIT;
			}
			handed.tw_state = reported;
			if (bpf_map_update_elem(&tws, &tw, &handed, BPF_ANY))
				count(TW_UNTRACKED); /* its end will not be seen */
			else if (reported == TCP_FIN_WAIT2)
				bpf_map_update_elem(&fin_wait2_tws, &tw, &substate, BPF_ANY);
		}
	}
	/* The storage stays until the kernel frees the socket: an RST sent after the close still
	 * finds its owner there. */
	emit(kind, &sk->__sk_common, true, sport, netns, skaddr, tw, oldstate, reported, prev_ts,
	     now, info, newstate == TCP_CLOSE && oldstate != TCP_LISTEN ? tp : NULL);
	if (newstate == TCP_CLOSE && info != &fresh)
		socket_closed(sk, info);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct recent_changes *recent = bpf_map_lookup_elem(&set_state_taken, &zero);

	if (recent) {
		recent->taken[0] = recent->taken[1];
		recent->taken[1].sk = (__u64)sk;
		recent->taken[1].states = oldstate << 8 | newstate;
	}
	handle_set_state(sk, oldstate, newstate);
	return 0;
}

/*
 * A softirq can interrupt on_set_state and hit the same tracepoint on that CPU; the kernel then
 * skips on_set_state, which is still running there. This second program on the same tracepoint
 * runs after it and takes every change on_set_state did not start on. Two remembered changes
 * are enough: one nested change at most comes between on_set_state starting on a change and
 * this program checking it. The kernel's skip count of on_set_state minus NESTED_HANDLED is
 * what neither saw, and is reported as lost. It has its own copy of the handler: a tail call
 * into on_set_state would run that program inside itself on this CPU, and the kernel's per-CPU
 * private stack for tracing programs would be shared by both runs (tried: the outer run's
 * locals were overwritten).
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_set_state_nested, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct recent_changes *recent = bpf_map_lookup_elem(&set_state_taken, &zero);
	__u64 states = oldstate << 8 | newstate;

	if (!recent)
		return 0;
	/* Newest first, and in that order: a change nested between the two reads shifts [1] to [0]. */
	if (READ_ONCE(recent->taken[1].sk) == (__u64)sk &&
	    READ_ONCE(recent->taken[1].states) == states)
		return 0;
	if (READ_ONCE(recent->taken[0].sk) == (__u64)sk &&
	    READ_ONCE(recent->taken[0].states) == states)
		return 0;
	count(NESTED_HANDLED);
	handle_set_state(sk, oldstate, newstate);
	return 0;
}

/*
 * The kernel's tick rate (HZ), for the times of timer expiries; 0 until measured. Measured, not
 * read from the kernel's config, which many systems do not ship (libbpf then refuses to load a
 * program that names it): the jiffies and the boot-time clock at the first sweep, and a second
 * or more later, rounded to the nearest rate the kernel offers.
 */
__u64 hz = 0;
__u64 hz_since_ns = 0;
__u64 hz_since_jiffies = 0;
#define TCP_TIMEWAIT_LEN_S 60

static __always_inline void measure_hz(__u64 now)
{
	__u64 jiffies = bpf_jiffies64(), rate;

	if (hz)
		return;
	if (!hz_since_ns) {
		hz_since_ns = now;
		hz_since_jiffies = jiffies;
		return;
	}
	if (now - hz_since_ns < 1000000000ULL)
		return;
	rate = (jiffies - hz_since_jiffies) * 1000000000ULL / (now - hz_since_ns);
	hz = rate < 175 ? 100 : rate < 275 ? 250 : rate < 650 ? 300 : 1000;
}

/*
 * When the FIN_WAIT2 timewait socket t moved to TIME_WAIT, at or before now: the kernel then
 * re-armed its timer to expire TCP_TIMEWAIT_LEN later. Now if HZ is not measured yet.
 */
static __always_inline __u64 moved_to_timewait_at(const struct inet_timewait_sock *t, __u64 now)
{
	__u64 armed, jiffies = bpf_jiffies64(), ns_per_jiffy, ago;

	if (!hz)
		return now;
	armed = BPF_CORE_READ(t, tw_timer.expires) - TCP_TIMEWAIT_LEN_S * hz;
	ns_per_jiffy = 1000000000ULL / hz;
	ago = (jiffies - armed) * ns_per_jiffy;
	/* The timer's jiffies and a clock read later: keep the result sane if they disagree. */
	if ((__s64)(jiffies - armed) < 0 || ago > now)
		return now;
	return now - ago;
}

/*
 * A FIN_WAIT2 timewait socket whose peer's FIN has arrived (its substate is TIME_WAIT): report
 * its move, once.
 */
static __always_inline void timewait_moved(__u64 tw, struct sock_info *found, __u64 now)
{
	const struct inet_timewait_sock *t = (const void *)tw;
	__u64 at = moved_to_timewait_at(t, now);

	if (at < found->ts_ns)
		at = found->ts_ns;
	emit(EVENT_TRANSITION, &t->__tw_common, false, BPF_CORE_READ(t, tw_sport),
	     BPF_CORE_READ(t, __tw_common.skc_net.net, ns.inum), found->skaddr, tw, TCP_FIN_WAIT2,
	     TCP_TIME_WAIT, found->ts_ns, at, found, NULL);
	found->ts_ns = at;
	found->tw_state = TCP_TIME_WAIT;
}

/*
 * A slab object is freed that may be a tracked timewait socket: its connection ends, from
 * TIME_WAIT, or from FIN_WAIT2 (tcp_fin_timeout expired, or the port was reused).
 */
static __always_inline void timewait_freed(__u64 tw)
{
	const struct inet_timewait_sock *t = (const void *)tw;
	struct sock_info *found, info;
	__u64 now = bpf_ktime_get_boot_ns();

	found = bpf_map_lookup_elem(&tws, &tw);
	if (!found)
		return;
	if (found->tw_state == TCP_FIN_WAIT2) {
		bpf_map_delete_elem(&fin_wait2_tws, &tw);
		/* The peer's FIN came after the last sweep. */
		if (BPF_CORE_READ(t, tw_substate) == TCP_TIME_WAIT)
			timewait_moved(tw, found, now);
	}
	info = *found;
	bpf_map_delete_elem(&tws, &tw);
	emit(EVENT_TRANSITION, &t->__tw_common, false, BPF_CORE_READ(t, tw_sport),
	     BPF_CORE_READ(t, __tw_common.skc_net.net, ns.inum), info.skaddr, tw, info.tw_state,
	     TCP_CLOSE, info.ts_ns, now, &info, NULL);
}

/* Timewait sockets one run of sweep_fin_wait2 looks at: the most a raw tracepoint's test run
 * passes as arguments. */
#define SWEEP_BATCH 12

/*
 * Run by user space (BPF_PROG_TEST_RUN) every 100 ms on the timewait sockets reported in
 * FIN_WAIT2, up to SWEEP_BATCH at a time as its arguments (0 ends the list; with none, it
 * only measures HZ): those whose
 * peer's FIN has since arrived move to TIME_WAIT. No hook sees that moment: the timer the
 * kernel re-arms then usually stays in its timer-wheel bucket, which fires no tracepoint.
 * (An iterator over the map would do, but map element iterators do not load everywhere.)
 */
SEC("raw_tp")
int sweep_fin_wait2(__u64 *ctx)
{
	__u64 given[SWEEP_BATCH];
	__u64 now = bpf_ktime_get_boot_ns();

	measure_hz(now);
	/* Context reads need constant offsets. */
#pragma unroll
	for (int i = 0; i < SWEEP_BATCH; i++)
		given[i] = ctx[i];
#pragma clang loop unroll(disable)
	for (int i = 0; i < SWEEP_BATCH; i++) {
		__u64 tw = given[i];
		struct sock_info *found;

		if (!tw)
			break;
		found = bpf_map_lookup_elem(&tws, &tw);
		if (found && found->tw_state == TCP_FIN_WAIT2) {
			if (BPF_CORE_READ((struct inet_timewait_sock *)tw, tw_substate) !=
			    TCP_TIME_WAIT)
				continue;
			timewait_moved(tw, found, now);
		}
		bpf_map_delete_elem(&fin_wait2_tws, &tw);
	}
	return 0;
}

/*
 * Raw tracepoints, whose arguments are plain words: the BTF tracepoint refuses a `void *`
 * argument before 6.7 or so, and its arguments changed (a cache name from 5.12, the cache
 * from 6.2), so the third one is compared with what tw_free_match says it is.
 */
SEC("raw_tp/kmem_cache_free")
int BPF_PROG(on_cache_free, __u64 call_site, __u64 ptr, __u64 third)
{
	const __u64 *seen = tw_free_match == TW_FREE_BY_NAME ? tw_slab_name : tw_slab;

	if (third && (third == seen[0] || third == seen[1]))
		timewait_freed(ptr);
	return 0;
}

/* Before 5.12 the tracepoint tells only the caller: the free of a timewait socket is there. */
SEC("raw_tp/kmem_cache_free")
int BPF_PROG(on_cache_free_by_site, __u64 call_site, __u64 ptr)
{
	if (call_site >= tw_free_site_start && call_site < tw_free_site_end)
		timewait_freed(ptr);
	return 0;
}

/* The addresses, ports and namespace of an event that is not a transition. */
struct tuple {
	__u32 netns;
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u8 state;
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* From any kind of socket (full, timewait or request), read with probe helpers. */
static __always_inline void tuple_of_sock(struct tuple *t, const struct sock_common *skc)
{
	__be16 sport;

	t->family = BPF_CORE_READ(skc, skc_family);
	t->state = BPF_CORE_READ(skc, skc_state);
	t->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	t->rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	if (t->state == TCP_TIME_WAIT)
		sport = BPF_CORE_READ((struct inet_timewait_sock *)skc, tw_sport);
	else if (t->state == TCP_NEW_SYN_RECV)
		sport = bpf_htons(BPF_CORE_READ(skc, skc_num));
	else /* inet_num is already 0 once a socket has closed; inet_sport is not. */
		sport = BPF_CORE_READ((struct inet_sock *)skc, inet_sport);
	t->lport = bpf_ntohs(sport);
	read_addresses(skc, t->family, t->saddr, t->daddr);
}

/* From a TCP packet, as received (local = destination); false if it is not TCP. */
static __always_inline bool tuple_of_packet(struct tuple *t, const struct sk_buff *skb)
{
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	void *head = BPF_CORE_READ(skb, head);
	void *l3 = head + BPF_CORE_READ(skb, network_header);
	struct tcp_ports ports;
	void *l4;

	__builtin_memset(t->saddr, 0, 16);
	__builtin_memset(t->daddr, 0, 16);
	if (proto == ETH_P_IP) {
		struct ipv4_header ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3) || ip.protocol != IPPROTO_TCP)
			return false;
		t->family = AF_INET;
		__builtin_memcpy(t->saddr, ip.daddr, 4);
		__builtin_memcpy(t->daddr, ip.saddr, 4);
		l4 = l3 + (ip.version_ihl & 0xf) * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6_header ip;

		/* Extension headers are not followed: TCP right after the fixed header only. */
		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3) || ip.nexthdr != IPPROTO_TCP)
			return false;
		t->family = AF_INET6;
		__builtin_memcpy(t->saddr, ip.daddr, 16);
		__builtin_memcpy(t->daddr, ip.saddr, 16);
		l4 = l3 + sizeof(ip);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&ports, sizeof(ports), l4))
		return false;
	t->lport = bpf_ntohs(ports.dest);
	t->rport = bpf_ntohs(ports.source);
	t->state = 0;
	t->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	return true;
}

/* What is known of sk (any kind of socket) in state `state`. */
static __always_inline struct sock_info *known_socket(const struct sock *sk, int state)
{
	__u64 skaddr = (__u64)sk;
	struct sock_info *info;

	if (state == TCP_TIME_WAIT)
		return bpf_map_lookup_elem(&tws, &skaddr);
	if (state == TCP_NEW_SYN_RECV)
		return NULL; /* request sockets have no storage */
	info = socket_info(sk, false);
	if (!info && !socket_storage && state == TCP_CLOSE)
		info = bpf_map_lookup_elem(&closed_socks, &skaddr);
	return info && info->skaddr == skaddr ? info : NULL;
}

/* What is known of the socket at skaddr, or else what its seed says, in `none`. */
static __always_inline struct sock_info *known_or_seeded(struct sock_info *info,
							  struct sock_info *none, __u64 skaddr)
{
	if (!info)
		info = none;
	if (skaddr && !(info->flags & EVENT_F_OWNER_KNOWN))
		adopt_seed(info, skaddr, info != none);
	return info;
}

/* Is sk a full TCP socket (not timewait or request)? */
static __always_inline bool full_tcp_sock(const struct sock *sk)
{
	int state;

	if (!sk)
		return false;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV &&
	       BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

/* Filter, then write one non-transition event. */
static __always_inline void emit_notice(int kind, const struct tuple *t, __u64 skaddr,
					const struct sock_info *info, __u32 detail)
{
	__u64 now = bpf_ktime_get_boot_ns();
	struct event *e;

	if (filter_states && !(filter_states & (1u << t->state)))
		return;
	if (!socket_wanted(t->family, t->lport, t->rport, t->netns, info))
		return;
	e = reserve();
	if (!e)
		return;
	e->ts_ns = now;
	e->prev_ts_ns = 0;
	e->skaddr = skaddr;
	e->twaddr = 0;
	e->cgroup = info->cgroup;
	e->netns = t->netns;
	e->pid = info->pid;
	__builtin_memcpy(e->comm, info->comm, TASK_COMM_LEN);
	__builtin_memcpy(e->saddr, t->saddr, 16);
	__builtin_memcpy(e->daddr, t->daddr, 16);
	e->sport = t->lport;
	e->dport = t->rport;
	e->family = t->family;
	e->oldstate = t->state;
	e->newstate = t->state;
	e->flags = info->flags & (EVENT_F_OWNER_KNOWN | EVENT_F_CGROUP_KNOWN);
	e->kind = kind;
	e->error = 0;
	e->detail = detail;
	if (with_stats)
		__builtin_memset(&((struct event_with_stats *)e)->stats, 0, sizeof(struct conn_stats));
	submit(e, now);
}

/* The addresses of sk (any kind of socket) and what is known of it, if anything. */
static __always_inline struct sock_info *socket_tuple(const struct sock *sk, struct tuple *t)
{
	tuple_of_sock(t, &sk->__sk_common);
	return known_socket(sk, t->state);
}

/* A notice about the socket sk (any kind of socket). */
static __always_inline void notice_socket(int kind, const struct sock *sk, __u32 detail)
{
	struct sock_info none = {};
	struct sock_info *info;
	struct tuple t;

	info = socket_tuple(sk, &t);
	emit_notice(kind, &t, (__u64)sk, known_or_seeded(info, &none, (__u64)sk), detail);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_retransmit, const struct sock *sk)
{
	if (sk)
		notice_socket(EVENT_RETRANSMIT, sk, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_receive_reset, const struct sock *sk)
{
	if (sk && (notice_kinds & (1u << EVENT_RESET_RECEIVED)))
		notice_socket(EVENT_RESET_RECEIVED, sk, 0);
	return 0;
}

/*
 * An RST sent: by a socket (abort, or close with unread data or zero linger, which send it just
 * after the socket's CLOSE transition) or for a packet no socket takes (skb, sk NULL).
 */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	bool wanted = notice_kinds & (1u << EVENT_RESET_SENT);
	struct sock_info none = {};
	struct sock_info *info = NULL;
	struct tuple t;
	__u64 skaddr = 0;

	if (sk) {
		skaddr = (__u64)sk;
		info = socket_tuple(sk, &t);
		if (t.state == TCP_CLOSE) {
			/* After the socket's last transition: user space joins it to the connection. */
			wanted |= with_stats;
		} else if (info) {
			/* Before it: that transition reports it. */
			info->flags |= SOCK_F_RESET_SENT;
		}
	} else if (!skb || !tuple_of_packet(&t, skb)) {
		return 0;
	}
	if (wanted)
		emit_notice(EVENT_RESET_SENT, &t, skaddr, known_or_seeded(info, &none, skaddr), 0);
	return 0;
}

/* A dropped TCP packet, with the kernel's reason (0 where it has none). */
static __always_inline void dropped(const struct sk_buff *skb, unsigned int reason)
{
	const struct sock *sk = skb->sk;
	struct sock_info none = {};
	struct sock_info *info = NULL;
	struct tuple t;
	__u64 skaddr = 0;

	if (full_tcp_sock(sk)) {
		skaddr = (__u64)sk;
		info = socket_tuple(sk, &t);
	} else {
		if (!tuple_of_packet(&t, skb))
			return;
		if (sk) {
			skaddr = (__u64)sk;
			t.state = BPF_CORE_READ(sk, __sk_common.skc_state);
			info = known_socket(sk, t.state);
		}
	}
	emit_notice(EVENT_DROP, &t, skaddr, known_or_seeded(info, &none, skaddr), reason);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_drop, const struct sk_buff *skb, void *location, unsigned int reason)
{
	dropped(skb, reason);
	return 0;
}

/* Before 5.17 the tracepoint has no reason. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(on_drop_without_reason, const struct sk_buff *skb)
{
	dropped(skb, 0);
	return 0;
}

/* The socket behind a file, or NULL if the file is not a socket. */
static __always_inline struct sock *file_socket(struct file *file)
{
	struct socket *sock;

	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_sock_from_file)) {
		sock = bpf_sock_from_file(file);
		return sock ? sock->sk : NULL;
	}
	/* Before bpf_sock_from_file (5.11): a socket's file has a sockfs inode, and its
	 * private_data is the struct socket. */
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/*
 * The owners of the sockets that exist now: every open file of every process, in all network
 * namespaces at once, as `ss -p` finds them. With hooks, user space puts the TCP sockets' owners
 * where the hooks look for them (seeds, listeners); the socket is read with probe loads, as the
 * verifier does not trust a pointer read from a struct socket.
 */
SEC("iter/task_file")
int seed_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct owner_record r = {};
	struct sock *sk;

	if (!task || !file)
		return 0;
	sk = file_socket(file);
	if (!sk)
		return 0;
	r.skaddr = (__u64)sk;
	r.owner.pid = task->tgid;
	__builtin_memcpy(r.owner.comm, task->comm, TASK_COMM_LEN);
	if (!one_shot) {
		/* One-shot snapshots keep only the TCP sockets they list: not reading the socket
		 * here saves a cache miss or two per socket on a busy host. */
		__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

		if ((family != AF_INET && family != AF_INET6) ||
		    BPF_CORE_READ(sk, sk_type) != SOCK_STREAM ||
		    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		r.state = BPF_CORE_READ(sk, __sk_common.skc_state);
		r.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
		r.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/*
 * Every TCP socket of the caller's network namespace, TIME_WAIT included, keyed and owned as the
 * live events are. Request sockets (NEW_SYN_RECV) are left out: no event follows their end.
 */
SEC("iter/tcp")
int dump_sockets(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct socket_record r = {};
	struct sock_info fresh = {};
	struct sock_info *info = &fresh;
	__be16 sport;
	__u64 key;

	if (!skc)
		return 0;
	r.state = skc->skc_state;
	if (r.state == TCP_NEW_SYN_RECV)
		return 0;
	r.read_ns = bpf_ktime_get_boot_ns();
	r.family = skc->skc_family;
	r.netns = skc->skc_net.net->ns.inum;
	r.dport = bpf_ntohs(skc->skc_dport);
	key = (__u64)skc;
	if (r.state == TCP_TIME_WAIT) {
		struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(skc);
		struct sock_info *known = bpf_map_lookup_elem(&tws, &key);

		if (!tw)
			return 0;
		sport = tw->tw_sk.tw_sport;
		/* An orphaned connection whose peer has not closed: FIN_WAIT2, as ss says. */
		if (tw->tw_sk.tw_substate == TCP_FIN_WAIT2)
			r.state = TCP_FIN_WAIT2;
		if (known)
			info = known;
		r.twaddr = key;
		r.skaddr = known ? known->skaddr : key;
	} else {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
		__u64 mstamp_us, now_us = bpf_ktime_get_ns() / 1000;
		struct sock_info *known;

		if (!tp)
			return 0;
		/* One-shot snapshots load no hooks: no socket has storage to look for. */
		known = one_shot ? NULL : socket_info((struct sock *)tp, false);
		if (known && known->skaddr != key)
			known = NULL; /* storage of an accepted socket not yet seen: its listener's */
		sport = ((struct inet_sock *)tp)->inet_sport;
		mstamp_us = tp->tcp_mstamp;
		r.skaddr = key;
		if (r.state != TCP_LISTEN && mstamp_us && now_us > mstamp_us)
			r.idle_ns = (now_us - mstamp_us) * 1000;
		/* Other cache lines of the tcp_sock: with 100,000 sockets, each one read costs. */
		if (socket_figures && r.state != TCP_LISTEN) {
			r.srtt_us = tp->srtt_us >> 3;
			r.total_retrans = tp->total_retrans;
			r.packets_out = tp->packets_out;
			r.bytes_in_flight = tp->snd_nxt - tp->snd_una;
		}
		if (known)
			info = known;
		else
			set_cgroup(&fresh, tp);
		if (!one_shot && !(info->flags & EVENT_F_OWNER_KNOWN))
			adopt_seed(info, key, info == known);
	}
	r.sport = bpf_ntohs(sport);
	if (!socket_wanted_as(r.family, r.sport, r.dport, r.netns, info, !one_shot))
		return 0;
	r.since_ns = info->ts_ns;
	if (r.twaddr && info->tw_state != r.state)
		r.since_ns = 0; /* moved to TIME_WAIT since the last sweep: when is not known yet */
	r.cgroup = info->cgroup;
	r.pid = info->pid;
	__builtin_memcpy(r.comm, info->comm, TASK_COMM_LEN);
	r.flags = info->flags & (EVENT_F_OWNER_KNOWN | EVENT_F_CGROUP_KNOWN);
	copy_addresses(skc, r.family, r.saddr, r.daddr);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
