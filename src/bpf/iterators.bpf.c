// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * The iterators user space runs: every task's socket files (their owners, as `ss -p` finds them)
 * and every TCP socket of a network namespace. Part of tcpstates.bpf.c.
 */

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
	/* The process's name, as ss -p shows it: its main thread's. */
	r.owner.task = (__u64)task->group_leader;
	BPF_CORE_READ_STR_INTO(&r.owner.comm, task, group_leader, comm);
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
 * A connection's figures, as ss -i shows them (-i): other cache lines of the tcp_sock, which
 * with 100,000 sockets cost when read for nothing.
 */
static __always_inline void read_figures(struct socket_record *r, const struct tcp_sock *tp)
{
	r->srtt_us = tp->srtt_us >> 3;
	r->total_retrans = tp->total_retrans;
	r->packets_out = tp->packets_out;
	r->bytes_in_flight = tp->snd_nxt - tp->snd_una;
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
	const struct sock *full = NULL;
	struct holder h;
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
		if (socket_figures && r.state != TCP_LISTEN)
			read_figures(&r, tp);
		if (known)
			info = known;
		else
			set_cgroup(&fresh, tp);
		if (!one_shot && !(info->flags & EVENT_F_OWNER_KNOWN))
			adopt_seed(info, key, info == known, r.read_ns);
		full = (struct sock *)tp;
	}
	r.sport = bpf_ntohs(sport);
	report_holder(&h, info, full);
	if (!socket_wanted_as(r.family, r.sport, r.dport, r.netns, info, &h, !one_shot))
		return 0;
	r.since_ns = info->ts_ns;
	if (r.twaddr && info->tw_state != r.state)
		r.since_ns = 0; /* moved to TIME_WAIT since the last sweep: when is not known yet */
	r.cgroup = info->cgroup;
	r.pid = h.pid;
	__builtin_memcpy(r.comm, h.comm, TASK_COMM_LEN);
	r.flags = h.flags | (info->flags & EVENT_F_CGROUP_KNOWN);
	copy_addresses(skc, r.family, r.saddr, r.daddr);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
