// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Feature probes, each loaded on its own (never attached) before the main program: does this
 * kernel give socket storage to tracing programs (5.11 on)? If it does not, tcpstates keeps
 * per-socket data in a hash instead. Do BPF trampolines (fexit) load?
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

/*
 * Do BPF trampolines load here (fexit)? Not on kernels built without them, or where they are
 * refused: accepts are then not seen (their acceptor shows at its first read, write or close).
 */
SEC("fexit/inet_csk_accept")
int BPF_PROG(probe_trampoline)
{
	return 0;
}
