// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Events other than state changes (--events, and the resets that tell how a connection ended):
 * retransmits, resets sent and received, TCP packets dropped. Part of tcpstates.bpf.c.
 */

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
		adopt_seed(info, skaddr, info != none, bpf_ktime_get_boot_ns());
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
	bool full = skaddr && t->state != TCP_TIME_WAIT && t->state != TCP_NEW_SYN_RECV;
	struct holder h;
	struct event *e;

	if (filter_states && !(filter_states & (1u << t->state)))
		return;
	report_holder(&h, info, full ? (const struct sock *)skaddr : NULL);
	if (!socket_wanted(t->family, t->lport, t->rport, t->netns, info, &h))
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
	e->pid = h.pid;
	__builtin_memcpy(e->comm, h.comm, TASK_COMM_LEN);
	__builtin_memcpy(e->saddr, t->saddr, 16);
	__builtin_memcpy(e->daddr, t->daddr, 16);
	e->sport = t->lport;
	e->dport = t->rport;
	e->family = t->family;
	e->oldstate = t->state;
	e->newstate = t->state;
	e->flags = h.flags | (info->flags & EVENT_F_CGROUP_KNOWN);
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
