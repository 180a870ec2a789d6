/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Who owns a socket: the task that opened it, its listener's owner, or what the task_file walk
 * found at start (seeds). Part of tcpstates.bpf.c.
 */
#ifndef OWNERS_BPF_H
#define OWNERS_BPF_H

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

#endif /* OWNERS_BPF_H */
