// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Who holds a socket between its transitions: the process that accepts it or reads it (calls
 * made in its own context), and the forks that may hand a socket on to a child. Each hook is
 * loaded where the kernel has it (user space decides). Writes are not hooked: a hook on every
 * read and write costs more than a data-heavy load allows, and a reader covers the servers
 * that matter (they read requests). Part of tcpstates.bpf.c.
 */

/*
 * The current process made a call on sk, a full socket (accept, read): it holds it. A record
 * says so when that changes who is reported as holding it, so the live table follows. The
 * same holder again with no fork since returns after one lookup.
 */
static __always_inline void touched(const struct sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 skaddr = (__u64)sk, now;
	struct task_struct *me;
	struct sock_info *info;
	struct tcp_sock *tp;
	struct holder before;
	__be16 sport;
	int state;

	info = socket_info(sk, false);
	if (info && info->skaddr == skaddr && info->pid == tgid && info->fork_gen == forks &&
	    (info->flags & EVENT_F_OWNER_KNOWN) && !(info->owner_flags & OWNER_F_INHERITED))
		return;
	me = current_process();
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!me || !tp)
		return;
	if (!info)
		info = socket_info(sk, true);
	if (!info)
		return;
	now = bpf_ktime_get_boot_ns();
	if (info->skaddr != skaddr) {
		/* Opened before tcpstates started, or its storage is its listener's copy. */
		first_seen(info, tp, skaddr);
		adopt_seed(info, skaddr, true, now);
	}
	report_holder(&before, info, sk);
	set_owner_task(info, me, now);
	if ((before.flags & EVENT_F_OWNER_KNOWN) && before.pid == tgid)
		return;
	state = sk->__sk_common.skc_state;
	sport = ((struct inet_sock *)tp)->inet_sport;
	emit(EVENT_OWNER, &sk->__sk_common, true, sport, socket_netns(tp), skaddr, 0, state, state,
	     info->ts_ns, now, info, NULL);
}

/*
 * A read: tcp_recvmsg() adjusts the receive space for every chunk it copies, socket locked.
 * It runs for every read on the host, so it first asks a per-CPU memory of the last reads,
 * which answers without a helper or a storage lookup when this thread read this connection
 * since the last fork (its ports, which pick its slot, tell a new connection at a reused
 * address).
 */
SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(on_read, const struct sock *sk)
{
	__u64 task = bpf_get_current_task();
	__u32 zero = 0, ports = sk->__sk_common.skc_portpair;
	struct recent_reads *recent = bpf_map_lookup_elem(&reads_seen, &zero);
	struct read_seen *slot;

	if (!recent)
		return 0;
	slot = &recent->slot[(ports ^ (ports >> 16)) & (READS_SEEN_SLOTS - 1)];
	if (slot->sk == (__u64)sk && slot->task == task && slot->ports == ports &&
	    recent->forks == forks)
		return 0;
	touched(sk);
	if (recent->forks != forks) {
		__builtin_memset(recent->slot, 0, sizeof(recent->slot));
		recent->forks = forks;
	}
	slot->sk = (__u64)sk;
	slot->task = task;
	slot->ports = ports;
	return 0;
}

/*
 * An accept, where BPF trampolines load (elsewhere the acceptor shows at its first read, write
 * or close). Two variants for inet_csk_accept's arguments: (sk, flags, err, kern) before 6.10,
 * (sk, arg) from 6.10; the return value follows them.
 */
/*
 * An accept shows the acceptor holds the new socket, and the listener too: a listener whose
 * owner accepts on it is seen holding it again (a parent that keeps its listener while the
 * children it forks close theirs). A worker accepting on its master's listener leaves the
 * listener's owner as it is: one name for a shared listener.
 */
static __always_inline void accepted(const struct sock *listener, const struct sock *child)
{
	struct sock_info *info = socket_info(listener, false);

	if (info && info->skaddr == (__u64)listener && info->pid == bpf_get_current_pid_tgid() >> 32) {
		info->owner_ns = bpf_ktime_get_boot_ns();
		info->fork_gen = forks;
	}
	if (child)
		touched(child);
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(on_accept, struct sock *sk, int flags, int *err, bool kern, struct sock *child)
{
	accepted(sk, child);
	return 0;
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(on_accept_args, struct sock *sk, void *arg, struct sock *child)
{
	accepted(sk, child);
	return 0;
}

/*
 * A new process with a copy of its parent's files (not a thread, not CLONE_FILES): the parent's
 * sockets may go with the child from now on.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 tgid = BPF_CORE_READ(parent, tgid);
	__u64 now;

	if (BPF_CORE_READ(child, tgid) == tgid ||
	    BPF_CORE_READ(child, files) == BPF_CORE_READ(parent, files))
		return 0;
	now = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&forked, &tgid, &now, BPF_ANY);
	__sync_fetch_and_add(&forks, 1);
	return 0;
}
