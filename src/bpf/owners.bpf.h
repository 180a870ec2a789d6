/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Who holds a socket. A process proves it holds one by a call on it made in its own context:
 * connect(), listen(), accept(), a read, a write, shutdown() or close() (the socket is then
 * locked by that task). Between proofs the last holder stands, unless it can no longer be the
 * holder: its process is gone, or it forked since and the socket's file has one reference left
 * (the parent or the child closed its copy: which is not known, so the owner is unknown). An
 * accepted socket starts with its listener's owner, right while it waits in the queue; once
 * accepted, it is unknown if that owner forked (the listener may be shared by workers). Sockets
 * that existed at start take the owner the task_file walk found (seeds). Part of
 * tcpstates.bpf.c.
 */
#ifndef OWNERS_BPF_H
#define OWNERS_BPF_H

#define PF_KTHREAD 0x00200000 /* include/linux/sched.h: a kernel thread */

/*
 * Forks that copied a process's files, counted: a socket whose owner was seen before the last
 * one (its sock_info.fork_gen is behind) looks up when its owner last forked.
 */
__u64 forks = 0;

/* The process whose context this runs in, or NULL in a kernel thread. */
static __always_inline struct task_struct *current_process(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return NULL;
	return BPF_CORE_READ(task, group_leader);
}

/* The process `leader` (a group leader) holds the socket as of now. */
static __always_inline void set_owner_task(struct sock_info *info, struct task_struct *leader,
					   __u64 now)
{
	info->pid = BPF_CORE_READ(leader, tgid);
	/* The process's name, as ss -p shows it: its main thread's, not the calling thread's. */
	BPF_CORE_READ_STR_INTO(&info->comm, leader, comm);
	info->owner_task = (__u64)leader;
	info->owner_ns = now;
	info->fork_gen = forks;
	info->owner_flags &= ~OWNER_F_INHERITED;
	info->flags |= EVENT_F_OWNER_KNOWN;
}

/* An owner found by the walk at start or recorded for a listener: right as of now. */
static __always_inline void take_owner(struct sock_info *info, const struct owner *owner,
				       __u64 now)
{
	info->pid = owner->pid;
	__builtin_memcpy(info->comm, owner->comm, TASK_COMM_LEN);
	info->owner_task = owner->task;
	info->owner_ns = now;
	info->fork_gen = forks;
	info->flags |= EVENT_F_OWNER_KNOWN;
}

/* A socket that existed at start: its owner as the task_file walk found it, if it did. */
static __always_inline void adopt_seed(struct sock_info *info, __u64 skaddr, bool consume,
				       __u64 now)
{
	struct owner *seed = bpf_map_lookup_elem(&seeds, &skaddr);

	if (!seed)
		return;
	take_owner(info, seed, now);
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
						 __be16 sport, __u64 now)
{
	struct listener_key key = listener_at(netns, sport);
	struct listener_owner *listener = bpf_map_lookup_elem(&listeners, &key);

	if (listener) {
		take_owner(info, &listener->owner, now);
		info->owner_flags |= OWNER_F_INHERITED;
	}
}

/* A listener closed: its place no longer names its owner. */
static __always_inline void forget_listener(__u32 netns, __be16 sport, __u64 skaddr)
{
	struct listener_key key = listener_at(netns, sport);
	struct listener_owner *listener = bpf_map_lookup_elem(&listeners, &key);

	if (listener && listener->skaddr == skaddr)
		bpf_map_delete_elem(&listeners, &key);
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
	listener.owner.task = info->owner_task;
	__builtin_memcpy(listener.owner.comm, info->comm, TASK_COMM_LEN);
	bpf_map_update_elem(&listeners, &key, &listener, BPF_ANY);
}

/* References to the file of the socket sock: one per descriptor, in whatever process. */
static __always_inline long file_references(const struct socket *sock)
{
	struct file *file = BPF_CORE_READ(sock, file);

	if (!file)
		return 0;
	if (bpf_core_field_exists(file->f_count))
		return BPF_CORE_READ(file, f_count.counter);
	/* 6.13 on: a file_ref_t, which counts from 0 for one reference. */
	return BPF_CORE_READ(file, f_ref.refcnt.counter) + 1;
}

/* Has the owner forked a copy of its files since it was last seen holding the socket? */
static __always_inline bool owner_forked_since(const struct sock_info *info)
{
	__u32 pid = info->pid;
	__u64 *at;

	if (info->fork_gen == forks)
		return false;
	at = bpf_map_lookup_elem(&forked, &pid);
	return at && *at > info->owner_ns;
}

/*
 * The owner to report now for sk, a full socket (NULL for a timewait or request socket, which
 * keeps its last holder): writes its pid and name (the name it has now, after an exec) and
 * returns EVENT_F_OWNER_KNOWN, or 0 when the holder is not known for sure.
 */
static __always_inline __u8 report_owner(const struct sock_info *info, const struct sock *sk,
					 __u32 *pid, char *comm)
{
	struct task_struct *task = (void *)info->owner_task;
	struct socket *sock;

	*pid = info->pid;
	__builtin_memcpy(comm, info->comm, TASK_COMM_LEN);
	if (!(info->flags & EVENT_F_OWNER_KNOWN))
		return 0;
	/* An orphan (its last holder closed it) or a child not yet accepted: as recorded. */
	sock = sk ? BPF_CORE_READ(sk, sk_socket) : NULL;
	if (!sock)
		return EVENT_F_OWNER_KNOWN;
	if (task) {
		if (BPF_CORE_READ(task, tgid) != info->pid || BPF_CORE_READ(task, exit_state))
			return 0; /* gone, and the socket lives on in another process */
		bpf_probe_read_kernel_str(comm, TASK_COMM_LEN, &task->comm);
	}
	if (owner_forked_since(info) &&
	    ((info->owner_flags & OWNER_F_INHERITED) || file_references(sock) <= 1))
		return 0;
	return EVENT_F_OWNER_KNOWN;
}

#endif /* OWNERS_BPF_H */
