// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Every state change of a full socket (inet_sock_set_state), with the socket's owner and the
 * time it entered the old state; the twin program takes the changes the kernel did not run the
 * first one for (nested). Part of tcpstates.bpf.c.
 */

/* connect() and listen() run in the owner's context; older contents are a past use. */
static __always_inline void socket_opened(struct sock_info *info, const struct tcp_sock *tp,
					  int newstate, __u64 skaddr, __u32 netns, __be16 sport,
					  __u64 now)
{
	struct task_struct *me = current_process();

	__builtin_memset(info, 0, sizeof(*info));
	if (me)
		set_owner_task(info, me, now);
	set_cgroup(info, tp);
	info->born_ns = newstate == TCP_SYN_SENT ? now : 0;
	info->skaddr = skaddr;
	if (newstate == TCP_LISTEN)
		remember_listener(info, netns, sport, skaddr);
}

/*
 * A new child of a listener (LISTEN -> SYN_RECV), its storage a copy of its listener's (socket
 * storage only, else a past use's): keep the owner only. Reported with its next transition.
 */
static __always_inline void child_created(struct sock_info *info, const struct tcp_sock *tp,
					  __u64 skaddr, __u32 netns, __be16 sport, __u64 now)
{
	info->flags &= socket_storage ? EVENT_F_OWNER_KNOWN : 0;
	info->owner_flags = OWNER_F_INHERITED;
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
			info->owner_task = listener->owner_task;
			info->owner_ns = listener->owner_ns;
			info->fork_gen = listener->fork_gen;
			info->flags |= EVENT_F_OWNER_KNOWN;
		}
	}
	if (!(info->flags & EVENT_F_OWNER_KNOWN))
		adopt_listener_owner(info, netns, sport, now);
}

/* First seen mid-life: time in oldstate unknown; an owner only if cloned (its listener's). */
static __always_inline void first_seen(struct sock_info *info, const struct tcp_sock *tp,
				       __u64 skaddr)
{
	info->flags &= EVENT_F_OWNER_KNOWN;
	info->owner_flags = OWNER_F_INHERITED;
	info->ts_ns = 0;
	info->born_ns = 0;
	info->skaddr = skaddr;
	set_cgroup(info, tp);
}

/* Who sent the first FIN. */
static __always_inline void note_first_fin(struct sock_info *info, int newstate)
{
	if ((newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT) &&
	    !(info->flags & (SOCK_F_LOCAL_CLOSED_FIRST | SOCK_F_REMOTE_CLOSED_FIRST)))
		info->flags |= newstate == TCP_FIN_WAIT1 ? SOCK_F_LOCAL_CLOSED_FIRST :
							    SOCK_F_REMOTE_CLOSED_FIRST;
}

/*
 * The connection lives on as the timewait socket tw: hand it what we know. An orphaned socket
 * whose peer has not closed stays in FIN_WAIT2 there (as ss shows it): a handover, not a
 * transition. Returns the state to report, and sets *kind.
 */
static __always_inline int hand_to_timewait(__u64 tw, const struct sock_info *info, int oldstate,
					    __u64 prev_ts, __u32 netns, int *kind)
{
	struct sock_info handed = *info;
	__u8 substate = BPF_CORE_READ((struct inet_timewait_sock *)tw, tw_substate);
	int reported, err;

	if (oldstate == TCP_FIN_WAIT2 && substate == TCP_FIN_WAIT2) {
		handed.ts_ns = prev_ts;
		*kind = EVENT_HANDOVER;
		reported = TCP_FIN_WAIT2;
	} else {
		reported = TCP_TIME_WAIT;
	}
	handed.tw_state = reported;
	/* Its end would be filtered out: keep the map's room for the namespace watched. */
	if (filter_netns && netns != filter_netns)
		return reported;
	err = bpf_map_update_elem(&tws, &tw, &handed, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* An earlier timewait socket at this address, whose free no hook saw: its end is
		 * lost, and counted. */
		count(TW_END_UNSEEN);
		unwatch_fin_wait2(tw);
		err = bpf_map_update_elem(&tws, &tw, &handed, BPF_ANY);
	}
	if (err)
		count(TW_UNTRACKED); /* its end will not be seen */
	else if (reported == TCP_FIN_WAIT2)
		watch_fin_wait2(tw, substate);
	return reported;
}

/*
 * The process that made this change by a call on the socket, which shows it holds it: such a
 * call locks the socket (softirq and timers leave a locked socket alone). The final close() of
 * a file shows its holder too, but a CLOSE made by another process (ss -K) does not: the file
 * then lives on. NULL if the change shows no holder.
 */
static __always_inline struct task_struct *changed_by_holder(const struct tcp_sock *tp,
							     int newstate)
{
	const struct sock *sk = (const struct sock *)tp;
	struct task_struct *me;
	struct socket *sock;

	if (!sk->sk_lock.owned)
		return NULL;
	me = current_process();
	if (!me || newstate != TCP_CLOSE)
		return me;
	sock = sk->sk_socket;
	return sock && file_references(sock) == 0 ? me : NULL;
}

static __always_inline void handle_set_state(const struct sock *sk, int oldstate, int newstate)
{
	__u64 skaddr = (__u64)sk;
	__u64 now, prev_ts, tw = 0;
	int reported, kind;
	struct sock_info fresh = {};
	struct task_struct *holder;
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
		socket_opened(info, tp, newstate, skaddr, netns, sport, now);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV) {
		child_created(info, tp, skaddr, netns, sport, now);
		return;
	} else if (info->skaddr != skaddr) {
		first_seen(info, tp, skaddr);
	}

	if (!(info->flags & EVENT_F_OWNER_KNOWN))
		adopt_seed(info, skaddr, info != &fresh, now);
	holder = changed_by_holder(tp, newstate);
	if (holder)
		set_owner_task(info, holder, now);
	if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE)
		forget_listener(netns, sport, skaddr);
	note_first_fin(info, newstate);

	prev_ts = info->ts_ns;
	if (info->flags & SOCK_F_SYN_RECV_DEFERRED) {
		info->flags &= ~SOCK_F_SYN_RECV_DEFERRED;
		emit(EVENT_TRANSITION, &sk->__sk_common, true, sport, netns, skaddr, 0, TCP_LISTEN,
		     TCP_SYN_RECV, 0, prev_ts, info, NULL);
	}
	info->ts_ns = now;

	/* One emit call site: each is inlined, and verified again, in both programs. */
	reported = newstate;
	kind = EVENT_TRANSITION;
	if (newstate == TCP_CLOSE) {
		tw = take_timewait_successor(tp, sport);
		if (tw)
			reported = hand_to_timewait(tw, info, oldstate, prev_ts, netns, &kind);
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
