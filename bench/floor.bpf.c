// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * The floor for bench/live.sh --floor: programs that do nothing, or only count, on the hooks a
 * state tracer needs. bench_live loads the ones a row asks for, so the kernel's own cost of a
 * hook (dispatch, and with kernel.bpf_stats_enabled the statistics' clock reads) is measured in
 * the same run as the tracers. Self-contained: compiled by bench/live.sh with clang alone.
 */
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_RB_NO_WAKEUP 1

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* [0] floor_count's count, [1] floor_ring's full ring */
	__type(key, __u32);
	__type(value, __u64);
} floor_counts SEC(".maps");

/* As tcpstates' default ring on two CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} floor_records SEC(".maps");

/* The size of tcpstates' record (struct event). */
struct floor_record {
	__u64 ts_ns;
	__u64 sk;
	__u64 states;
	__u64 rest[11];
};

static void count_at(__u32 index)
{
	__u64 *n = bpf_map_lookup_elem(&floor_counts, &index);

	if (n)
		*n += 1;
}

SEC("tp_btf/inet_sock_set_state")
int floor_empty(void *ctx)
{
	return 0;
}

/* What the issue calls a program that only counts: one per-CPU counter per state change. */
SEC("tp_btf/inet_sock_set_state")
int floor_count(void *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&floor_counts, &zero);

	if (n)
		*n += 1;
	return 0;
}

/*
 * What delivering an event costs at least: a record of tcpstates' size written to a ring
 * buffer per state change, read by bench_live every 10 ms (no wakeups), nothing else.
 */
SEC("tp_btf/inet_sock_set_state")
int floor_ring(__u64 *ctx)
{
	struct floor_record *r = bpf_ringbuf_reserve(&floor_records, sizeof(*r), 0);

	if (!r) {
		count_at(1);
		return 0;
	}
	r->ts_ns = bpf_ktime_get_boot_ns();
	r->sk = ctx[0];
	r->states = ctx[1] << 8 | ctx[2];
	for (int i = 0; i < 11; i++)
		r->rest[i] = 0;
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	return 0;
}

/* With floor_empty and floor_free: empty programs on the three hooks tcpstates attaches. */
SEC("tp_btf/inet_sock_set_state")
int floor_twin(void *ctx)
{
	return 0;
}

SEC("tp_btf/kmem_cache_free")
int floor_free(void *ctx)
{
	return 0;
}

/* The floor of a hook on reads and writes: empty programs where tcpstates sees them. */
SEC("tp_btf/tcp_rcv_space_adjust")
int floor_read(void *ctx)
{
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int floor_write(void *ctx)
{
	return 0;
}
