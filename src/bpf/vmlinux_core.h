/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The few kernel types tcpstates reads, declared for CO-RE instead of a full vmlinux.h.
 * Only field names matter: libbpf relocates every access against the running kernel's BTF,
 * so layouts here need not match the kernel's. Names must be the kernel's own.
 */
#ifndef VMLINUX_CORE_H
#define VMLINUX_CORE_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

/* UAPI constants used by the program (stable ABI values). */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_SK_STORAGE = 24,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
enum { BPF_F_NO_PREALLOC = 1, BPF_F_CLONE = 1 << 9 };
enum { BPF_SK_STORAGE_GET_F_CREATE = 1 };
enum { BPF_RB_NO_WAKEUP = 1, BPF_RB_FORCE_WAKEUP = 2 };
enum { BPF_RB_AVAIL_DATA = 0, BPF_RB_RING_SIZE = 1 };
/* Helpers whose existence the program checks (CO-RE: the kernel's own enum decides). */
enum bpf_func_id { BPF_FUNC_sock_from_file = 162 };

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define SOCK_DONE 1 /* enum sock_flags: set when the peer's FIN is received */

/* include/net/tcp_states.h */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
	TCP_BOUND_INACTIVE,
	TCP_MAX_STATES,
};

/*
 * Declared without CO-RE: libbpf searches the kernel's BTF for every type a relocation starts
 * from, which is most of the time tcpstates takes to start. These layouts have not changed
 * since they were introduced, and the kernel checks every access to them.
 */
/* include/linux/list_nulls.h and include/net/inet_hashtables.h */
struct hlist_nulls_node {
	struct hlist_nulls_node *next, **pprev;
};

struct hlist_nulls_head {
	struct hlist_nulls_node *first;
};

struct inet_ehash_bucket {
	struct hlist_nulls_head chain;
};

/* Iterator contexts and metadata (include/linux/bpf.h, kernel/bpf/task_iter.c, net/ipv4/tcp_ipv4.c):
 * each pointer takes 8 bytes (__bpf_md_ptr). */
struct seq_file;
struct task_struct;
struct file;
struct sock_common;

struct bpf_iter_meta {
	struct seq_file *seq;
};


struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
};

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct kmem_cache {
	const char *name;
};

struct ns_common {
	unsigned int inum;
};

struct inet_hashinfo {
	struct inet_ehash_bucket *ehash;
	unsigned int ehash_mask;
};

struct inet_timewait_death_row {
	struct inet_hashinfo *hashinfo; /* Linux 6.1+: per network namespace */
};

struct netns_ipv4 {
	struct inet_timewait_death_row tcp_death_row;
};

struct net {
	struct ns_common ns;
	struct netns_ipv4 ipv4;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	__u8 u6_addr8[16];
};

struct timewait_sock_ops {
	struct kmem_cache *twsk_slab;
};

struct proto {
	struct timewait_sock_ops *twsk_prot;
	union {
		struct inet_hashinfo *hashinfo; /* before Linux 6.1 */
	} h;
};

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	atomic_t refs;
} refcount_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	__u32 skc_portpair; /* the two ports together (a union with the above) */
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct proto *skc_prot;
	possible_net_t skc_net;
	unsigned int skc_hash;
	struct hlist_nulls_node skc_nulls_node;
	unsigned long skc_flags; /* sk_flags of a full socket */
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	refcount_t skc_refcnt; /* tw_refcnt of a timewait socket */
};

struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
	int level;
	struct cgroup *ancestors[];
};

struct sock_cgroup_data {
	struct cgroup *cgroup; /* 5.15 on */
	__u64 val;             /* before: the pointer, or cgroup v1 data if bit 0 is set */
};

typedef struct {
	int owned; /* a process holds the socket's lock (lock_sock) */
} socket_lock_t;

struct socket;

struct sock {
	struct sock_common __sk_common;
	socket_lock_t sk_lock;
	__u16 sk_type;
	__u16 sk_protocol;
	int sk_err;
	struct sock_cgroup_data sk_cgrp_data;
	struct socket *sk_socket; /* NULL once orphaned (closed by its last holder) */
};

struct net_device {
	possible_net_t nd_net;
};

struct sk_buff {
	struct sock *sk;
	struct net_device *dev;
	unsigned char *head;
	__u16 network_header;
	__be16 protocol;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct timer_list {
	unsigned long expires; /* in jiffies */
	void (*function)(struct timer_list *);
};

struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate;
	__be16 tw_sport;
	struct timer_list tw_timer;
};

struct inode {
	unsigned short i_mode;
};

typedef struct {
	long counter;
} atomic_long_t;

typedef struct {
	atomic_long_t refcnt; /* references - 1 */
} file_ref_t;

struct file {
	void *private_data;
	struct inode *f_inode;
	atomic_long_t f_count; /* before 6.13 */
	file_ref_t f_ref;      /* 6.13 on */
};

struct socket {
	struct sock *sk;
	struct file *file;
};

struct files_struct;

struct task_struct {
	unsigned int flags; /* PF_* */
	int exit_state;     /* set once the task has exited */
	int tgid;
	struct task_struct *group_leader;
	struct files_struct *files;
	char comm[16];
};

struct minmax_sample {
	__u32 t;
	__u32 v;
};

struct minmax {
	struct minmax_sample s[3];
};

struct list_head {
	struct list_head *next, *prev;
};

struct tcp_sock {
	struct list_head tsq_node; /* an empty list (pointing at itself) in a listener */
	__u64 tcp_mstamp; /* CLOCK_MONOTONIC in us of the last send or receive */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u32 segs_in;
	__u32 segs_out;
	__u32 total_retrans;
	__u32 srtt_us; /* smoothed RTT << 3 */
	struct minmax rtt_min;
	__u32 packets_out;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 write_seq; /* after the last byte queued, a FIN included */
};

struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
};

#pragma clang attribute pop

/* Wire headers (UAPI layouts, read from packet memory: no relocation). */
#define ETH_P_IP   0x0800
#define ETH_P_IPV6 0x86DD

struct ipv4_header {
	__u8 version_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ipv6_header {
	__u8 version_class[4];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct tcp_ports {
	__be16 source;
	__be16 dest;
};

#endif /* VMLINUX_CORE_H */
