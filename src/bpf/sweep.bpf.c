// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Orphans in FIN_WAIT2 (a timewait socket whose tw_substate is FIN_WAIT2) move to TIME_WAIT when
 * the peer's FIN arrives, which no hook sees: user space runs sweep_fin_wait2 every 100 ms to
 * report the moves, timed from the re-armed timer with the kernel's tick rate (HZ), measured
 * here. Part of tcpstates.bpf.c.
 */

/* A timewait socket in FIN_WAIT2 is watched by the sweep, if there is room. */
static __always_inline void watch_fin_wait2(__u64 tw, __u8 substate)
{
	long err = bpf_map_update_elem(&fin_wait2_tws, &tw, &substate, BPF_NOEXIST);

	if (!err)
		__sync_fetch_and_add(&fin_wait2_keys, 1);
	else if (err != -EEXIST)
		count(FIN_WAIT2_UNWATCHED);
}

static __always_inline void unwatch_fin_wait2(__u64 tw)
{
	if (!bpf_map_delete_elem(&fin_wait2_tws, &tw))
		__sync_fetch_and_add(&fin_wait2_keys, -1);
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
		unwatch_fin_wait2(tw);
	}
	return 0;
}

