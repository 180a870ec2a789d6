/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Every map of the BPF program, and what is kept per socket. Part of tcpstates.bpf.c. */
#ifndef MAPS_BPF_H
#define MAPS_BPF_H

#define SOCK_F_CGROUP_MATCH (1 << 7) /* the socket's cgroup is inside filter_cgroup */
/*
 * LISTEN -> SYN_RECV fires inside inet_csk_clone_lock() before the child gets its addresses and
 * ports, so it is reported with the child's next transition, which follows on the same CPU.
 */
#define SOCK_F_SYN_RECV_DEFERRED (1 << 6)
/* Bits 2..5 are CONN_F_* shifted by SOCK_F_CONN_SHIFT. */
#define SOCK_F_CONN_SHIFT 2
#define SOCK_F_LOCAL_CLOSED_FIRST (CONN_F_LOCAL_CLOSED_FIRST << SOCK_F_CONN_SHIFT)
#define SOCK_F_REMOTE_CLOSED_FIRST (CONN_F_REMOTE_CLOSED_FIRST << SOCK_F_CONN_SHIFT)
#define SOCK_F_RESET_SENT (CONN_F_RESET_SENT << SOCK_F_CONN_SHIFT)
#define SOCK_F_PASSIVE (CONN_F_PASSIVE << SOCK_F_CONN_SHIFT)

/* sock_info.owner_flags */
/* The owner is its listener's (or was found at start), not seen holding this socket itself. */
#define OWNER_F_INHERITED (1 << 0)

/* What is known of a socket: in a full socket's storage, or keyed by timewait socket. */
struct sock_info {
	__u64 ts_ns;  /* when it entered its current state */
	__u64 cgroup;
	__u64 skaddr; /* the full socket (kept for its timewait successor) */
	__u64 born_ns; /* when its connection started; 0 = unknown */
	__u64 owner_task; /* the owner's task_struct (group leader); 0 = unknown */
	__u64 owner_ns;   /* when the owner was last seen holding it (or inherited it) */
	__u64 fork_gen;   /* the count of forks then (see forks in owners.bpf.h) */
	__u32 pid;
	__u8 flags; /* EVENT_F_* and SOCK_F_* */
	__u8 tw_state; /* of a timewait socket: the state last reported, FIN_WAIT2 or TIME_WAIT */
	__u8 owner_flags; /* OWNER_F_* */
	__u8 pad;
	char comm[TASK_COMM_LEN];
};

/* Map sizes are documented in the README and the man page. */
/*
 * Per full socket, in the socket itself: freed by the kernel with it, so it needs no size limit
 * and no eviction. An accepted socket starts with a copy of its listener's (BPF_F_CLONE): the
 * listener's owner, exactly, SO_REUSEPORT groups included.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sock_info);
} socks SEC(".maps");

/*
 * The same, by socket address, where tracing programs have no socket storage (before 5.11).
 * An entry goes at its socket's last transition; sized by user space (1 with socket storage).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by user space */
	__type(key, __u64);
	__type(value, struct sock_info);
} socks_by_addr SEC(".maps");

/*
 * Without socket storage: the sockets that closed last, for an RST sent just after the close
 * (possibly on another CPU: the closing task may move). The oldest make room.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1); /* set by user space */
	__type(key, __u64);
	__type(value, struct sock_info);
} closed_socks SEC(".maps");

/*
 * Per timewait socket, from its takeover to its free. Sized by user space to the kernel's own
 * limit; entries are allocated as needed. A full map refuses new entries, counted as
 * TW_UNTRACKED, rather than silently forgetting old ones as an LRU map would. An entry whose
 * free was not seen (its hook skipped by recursion) is overwritten when the slab reuses the
 * address, which it does quickly.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536); /* set by user space */
	__type(key, __u64);
	__type(value, struct sock_info);
} tws SEC(".maps");

/*
 * Timewait sockets reported in FIN_WAIT2 (an orphaned connection whose peer has not closed),
 * for the sweep that sees the peer's FIN move them to TIME_WAIT. A key stays until its socket
 * moves or is freed. Kept small (user space sizes it): the sweep's read of the keys visits
 * every bucket. A socket it has no room for moves unwatched, and is reported at its end.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384); /* set by user space */
	__type(key, __u64);
	__type(value, __u8);
} fin_wait2_tws SEC(".maps");

/* The keys in fin_wait2_tws, by the programs' own inserts and deletes: user space reads the
 * map only when there are some. */
__u64 fin_wait2_keys = 0;

/*
 * The owners of the sockets that existed at start, from the task_file walk, written by user
 * space after the hooks are attached. A socket takes its owner from here the first time it is
 * seen without one, which removes the entry: the map only shrinks. Sized by user space to the
 * kernel's count of TCP sockets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by user space */
	__type(key, __u64);
	__type(value, struct owner);
} seeds SEC(".maps");

/*
 * Owners of listeners by namespace and port, for the accepted children of a listener whose own
 * storage has no owner (it existed at start). A listener's entry goes when it closes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set by user space */
	__type(key, struct listener_key);
	__type(value, struct listener_owner);
} listeners SEC(".maps");

/*
 * When each process last forked a copy of its files (by tgid): a socket it was seen holding
 * before may since be held by the child instead. The oldest make room: a forgotten fork only
 * leaves an owner that was right once.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} forked SEC(".maps");

/* A read on_read has seen prove its holder: the socket, the reading thread, its ports. */
struct read_seen {
	__u64 sk;
	__u64 task;
	__u32 ports;
	__u32 pad;
};

#define READS_SEEN_SLOTS 8 /* a power of two */

/* Per CPU: the reads seen since the last fork (forks then), a slot per socket by its ports. */
struct recent_reads {
	__u64 forks;
	struct read_seen slot[READS_SEEN_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct recent_reads);
} reads_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} lports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} rports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20); /* set by user space: --ring-size */
} events SEC(".maps");

/* Per CPU, indexed by enum counter_index (tcpstates.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* A state change, as on_set_state_nested recognises it. */
struct change {
	__u64 sk;
	__u64 states; /* oldstate << 8 | newstate */
};

/* Per CPU: the last two changes on_set_state started on, newest in [1]. */
struct recent_changes {
	struct change taken[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct recent_changes);
} set_state_taken SEC(".maps");

#endif /* MAPS_BPF_H */
