// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * TIME_WAIT, which inet_sock_set_state never shows: the timewait socket that takes over a closing
 * full socket (found in the established hash), and its end, seen as the free of its slab object.
 * Part of tcpstates.bpf.c.
 */

/*
 * Learned from the first TIME_WAIT takeover: the timewait sockets' slab caches (IPv4, IPv6)
 * and their names. Not taken from kallsyms, which shows zeros without CAP_SYSLOG and takes
 * ~40 ms to read.
 */
__u64 tw_slab[2] = {};
__u64 tw_slab_name[2] = {};

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

/*
 * A slab object is freed that may be a tracked timewait socket: its connection ends, from
 * TIME_WAIT, or from FIN_WAIT2 (tcp_fin_timeout expired, or the port was reused). Was it one?
 */
static __always_inline bool timewait_freed(__u64 tw)
{
	const struct inet_timewait_sock *t = (const void *)tw;
	struct sock_info *found, info;
	__u64 now = bpf_ktime_get_boot_ns();

	found = bpf_map_lookup_elem(&tws, &tw);
	if (!found)
		return false;
	if (found->tw_state == TCP_FIN_WAIT2) {
		unwatch_fin_wait2(tw);
		/* The peer's FIN came after the last sweep. */
		if (BPF_CORE_READ(t, tw_substate) == TCP_TIME_WAIT)
			timewait_moved(tw, found, now);
	}
	info = *found;
	bpf_map_delete_elem(&tws, &tw);
	emit(EVENT_TRANSITION, &t->__tw_common, false, BPF_CORE_READ(t, tw_sport),
	     BPF_CORE_READ(t, __tw_common.skc_net.net, ns.inum), info.skaddr, tw, info.tw_state,
	     TCP_CLOSE, info.ts_ns, now, &info, NULL);
	return true;
}

/* Is this free, by the tracepoint's arguments, that of a timewait socket? */
static __always_inline bool frees_timewait(__u64 third)
{
	const __u64 *seen = tw_free_match == TW_FREE_BY_NAME ? tw_slab_name : tw_slab;

	return third && (third == seen[0] || third == seen[1]);
}

static __always_inline bool freed_at_timewait_site(__u64 call_site)
{
	return call_site >= tw_free_site_start && call_site < tw_free_site_end;
}

/*
 * The twin of on_cache_free, as on_set_state_nested is on_set_state's. A softirq that frees
 * timewait sockets while on_cache_free runs on that CPU (for any free) makes the kernel skip
 * on_cache_free, for the whole batch a timer expires at once; this program, attached after it,
 * still runs. A socket whose free on_cache_free took has left the tws map, so only the others
 * are reported here. Timewait sockets are freed in task or softirq context, and one program at
 * a time runs in each, so one of the two always runs (unless tasks are preempted inside BPF
 * programs: then the next timewait socket at the address tells, see hand_to_timewait). Its
 * last reference gone (the slab keeps timewait memory typed, SLAB_TYPESAFE_BY_RCU) shows the
 * socket was not taken again, between the two programs, by a new one an interrupt made.
 */
static __always_inline void timewait_freed_unseen(__u64 tw)
{
	const struct inet_timewait_sock *t = (const void *)tw;

	if (BPF_CORE_READ(t, __tw_common.skc_refcnt.refs.counter) != 0)
		return;
	if (timewait_freed(tw))
		count(NESTED_FREES);
}

/*
 * Raw tracepoints, whose arguments are plain words: the BTF tracepoint refuses a `void *`
 * argument before 6.7 or so, and its arguments changed (a cache name from 5.12, the cache
 * from 6.2), so the third one is compared with what tw_free_match says it is.
 */
SEC("raw_tp/kmem_cache_free")
int BPF_PROG(on_cache_free, __u64 call_site, __u64 ptr, __u64 third)
{
	if (frees_timewait(third))
		timewait_freed(ptr);
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(on_cache_free_nested, __u64 call_site, __u64 ptr, __u64 third)
{
	if (frees_timewait(third))
		timewait_freed_unseen(ptr);
	return 0;
}

/* Before 5.12 the tracepoint tells only the caller: the free of a timewait socket is there. */
SEC("raw_tp/kmem_cache_free")
int BPF_PROG(on_cache_free_by_site, __u64 call_site, __u64 ptr)
{
	if (freed_at_timewait_site(call_site))
		timewait_freed(ptr);
	return 0;
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(on_cache_free_by_site_nested, __u64 call_site, __u64 ptr)
{
	if (freed_at_timewait_site(call_site))
		timewait_freed_unseen(ptr);
	return 0;
}
