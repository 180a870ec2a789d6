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

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} floor_counts SEC(".maps");

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
