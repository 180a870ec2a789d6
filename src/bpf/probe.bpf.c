// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Feature probe, loaded (never attached) before the main program: does this kernel give
 * socket storage to tracing programs (5.11 on)? If it does not, tcpstates keeps per-socket
 * data in a hash instead.
 */
#include "vmlinux_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} probe_storage SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(probe_socket_storage, const struct sock *sk)
{
	bpf_sk_storage_get(&probe_storage, (void *)sk, 0, 0);
	return 0;
}
