/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * What every hook shares: the filters, a socket's addresses, namespace, cgroup and stored data,
 * the counters, and writing a record to the ring buffer. Part of tcpstates.bpf.c.
 */
#ifndef COMMON_BPF_H
#define COMMON_BPF_H

#define MAX_CGROUP_DEPTH 32

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

/* The owner a record reports (see report_owner). */
struct holder {
	__u32 pid;
	__u8 flags; /* EVENT_F_OWNER_KNOWN or 0 */
	char comm[TASK_COMM_LEN];
};

static __always_inline void report_holder(struct holder *h, const struct sock_info *info,
					  const struct sock *sk)
{
	h->flags = report_owner(info, sk, &h->pid, h->comm);
}

static __always_inline bool owner_wanted(const struct sock_info *info, const struct holder *h,
					 bool owner_known_here)
{
	bool known = h->flags & EVENT_F_OWNER_KNOWN;

	if (owner_known_here && filter_pid && (!known || h->pid != filter_pid))
		return false;
	if (owner_known_here && filter_comm_on && (!known || !comm_matches(h->comm)))
		return false;
	if (filter_cgroup && !(info->flags & SOCK_F_CGROUP_MATCH))
		return false;
	return true;
}

/* The filters that do not depend on the state; the owner's only where it is known here. */
static __always_inline bool socket_wanted_as(__u16 family, __u16 lport, __u16 rport, __u32 netns,
					     const struct sock_info *info, const struct holder *h,
					     bool owner_known_here)
{
	if (filter_family && family != filter_family)
		return false;
	if (filter_netns && netns != filter_netns)
		return false;
	if (filter_lports && !bpf_map_lookup_elem(&lports, &lport))
		return false;
	if (filter_rports && !bpf_map_lookup_elem(&rports, &rport))
		return false;
	return owner_wanted(info, h, owner_known_here);
}

/* The filters that do not depend on the state. */
static __always_inline bool socket_wanted(__u16 family, __u16 lport, __u16 rport, __u32 netns,
					  const struct sock_info *info, const struct holder *h)
{
	return socket_wanted_as(family, lport, rport, netns, info, h, true);
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

#define EEXIST 17

/* One load the compiler may not merge or reorder with the other such loads. */
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &what);

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
	struct holder h;
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
	/* A timewait socket keeps its connection's last holder. */
	report_holder(&h, info, typed ? (const struct sock *)skc : NULL);
	if (!socket_wanted(family, lport, rport, netns, info, &h))
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
	e->pid = h.pid;
	__builtin_memcpy(e->comm, h.comm, TASK_COMM_LEN);
	if (typed)
		copy_addresses(skc, family, e->saddr, e->daddr);
	else
		read_addresses(skc, family, e->saddr, e->daddr);
	e->sport = lport;
	e->dport = rport;
	e->family = family;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->flags = h.flags | (info->flags & EVENT_F_CGROUP_KNOWN);
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

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		cg = sk->sk_cgrp_data.cgroup;
	} else {
		/* Before 5.15 the pointer shares a word with cgroup v1 data: bit 0 set means
		 * the word holds v1 data (net_cls, net_prio), not a cgroup. */
		__u64 val = BPF_CORE_READ(sk, sk_cgrp_data.val);

		cg = val & 1 ? NULL : (struct cgroup *)val;
	}
	if (!cg)
		return;
	info->cgroup = BPF_CORE_READ(cg, kn, id);
	info->flags |= EVENT_F_CGROUP_KNOWN;
	if (filter_cgroup && cgroup_inside_filter(cg))
		info->flags |= SOCK_F_CGROUP_MATCH;
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

#endif /* COMMON_BPF_H */
