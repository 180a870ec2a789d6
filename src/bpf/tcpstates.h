/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The record layout shared by the BPF program and the Rust side (via the skeleton's types). */
#ifndef TCPSTATES_H
#define TCPSTATES_H

#define TASK_COMM_LEN 16

/*
 * The constants below are enums, not macros, so that they reach the Rust side through the
 * skeleton's generated types (types::record_kind::EVENT_TRANSITION, ...), never copied by hand.
 */

/* event.kind */
enum record_kind {
	EVENT_TRANSITION = 1,
	EVENT_RETRANSMIT = 2,     /* a segment retransmitted (--events retransmit) */
	EVENT_RESET_SENT = 3,     /* an RST sent, for a socket or for a packet without one */
	EVENT_RESET_RECEIVED = 4, /* an RST received by a socket */
	EVENT_DROP = 5,           /* a TCP packet freed as dropped; detail = enum skb_drop_reason */
	/* An orphaned connection moved, still in FIN_WAIT2, to the timewait socket twaddr: not a
	 * state change (ss shows it in FIN_WAIT2 still); carries the connection's figures. */
	EVENT_HANDOVER = 6,
	/* The socket's holder changed, shown by a call the new holder made on it (accept, a read
	 * or a write): not a state change; pid and comm name the holder. */
	EVENT_OWNER = 7,
};

/* event.flags, socket_record.flags */
enum record_flags {
	EVENT_F_OWNER_KNOWN = 1 << 0,  /* pid and comm name the socket's owner */
	EVENT_F_CGROUP_KNOWN = 1 << 1, /* cgroup is the socket's cgroup v2 id */
	EVENT_F_STATS = 1 << 2,        /* a struct conn_stats follows: the connection ended */
};

/* conn_stats.flags */
enum conn_flags {
	CONN_F_LOCAL_CLOSED_FIRST = 1 << 0,  /* this side sent the first FIN */
	CONN_F_REMOTE_CLOSED_FIRST = 1 << 1, /* the peer sent the first FIN */
	CONN_F_RESET_SENT = 1 << 2,          /* this side sent an RST before it closed */
	CONN_F_PASSIVE = 1 << 3,             /* accepted from a listener (else connect()ed) */
	CONN_F_FIN_RECEIVED = 1 << 4, /* the peer's FIN arrived (counted in bytes_received) */
	CONN_F_FIN_ACKED = 1 << 5,    /* our FIN was acknowledged (counted in bytes_acked) */
};

/* Indexes of the per-CPU `counters` map. */
enum counter_index {
	LOST_RING = 0,      /* records the ring buffer had no room for */
	NESTED_HANDLED = 1, /* state changes on_set_state_nested took (see transitions.bpf.c) */
	TW_UNTRACKED = 2,   /* timewait sockets the full tws map had no room for */
	NESTED_FREES = 3,   /* timewait frees on_cache_free_nested took (see timewait.bpf.c) */
	TW_END_UNSEEN = 4,  /* timewait sockets found freed unseen when their address was reused */
	FIN_WAIT2_UNWATCHED = 5, /* timewait sockets in FIN_WAIT2 the full fin_wait2_tws had no room for */
	COUNTERS = 6,
};

/* How on_cache_free knows the free of a timewait socket (the rodata knob tw_free_match). */
enum tw_free_match {
	TW_FREE_BY_CACHE = 1, /* kmem_cache_free(call_site, ptr, cache): the timewait cache */
	TW_FREE_BY_NAME = 2,  /* kmem_cache_free(call_site, ptr, name): that cache's name */
};

/* Timewait sockets one run of sweep_fin_wait2 looks at: the most a raw tracepoint's test run
 * passes as arguments. */
enum sweep_limits {
	SWEEP_BATCH = 12,
};

/*
 * One TCP state transition, or for other kinds one thing that happened to a socket (oldstate =
 * newstate = its state then). Addresses are in network byte order; ports in host order.
 */
struct event {
	__u64 ts_ns;      /* CLOCK_BOOTTIME of the transition */
	__u64 prev_ts_ns; /* CLOCK_BOOTTIME when oldstate was entered; 0 = unknown */
	__u64 skaddr;     /* the connection's socket; kept through TIME_WAIT */
	__u64 twaddr;     /* the timewait socket for TIME_WAIT transitions, else 0 */
	__u64 cgroup;     /* cgroup v2 id (inode of its directory) */
	__u32 netns;      /* network namespace inode */
	__u32 pid;        /* owner's process id (tgid) */
	char comm[TASK_COMM_LEN];
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 oldstate;
	__u8 newstate;
	__u8 flags;
	__u8 kind;
	__u16 error;  /* transitions to CLOSE: the socket's error (errno), 0 if none */
	__u32 detail; /* EVENT_DROP: the kernel's drop reason */
};

/* How a connection lived, read from its tcp_sock when it ended; follows its last event. */
struct conn_stats {
	__u64 born_ns;        /* CLOCK_BOOTTIME of its SYN (connect) or its creation (accept); 0 = unknown */
	__u64 bytes_acked;    /* tcp_sock.bytes_acked: sent and acknowledged, SYN and FIN included */
	__u64 bytes_received; /* tcp_sock.bytes_received: FIN included */
	__u64 bytes_sent;     /* tcp_sock.bytes_sent: payload sent, retransmissions included */
	__u64 bytes_retrans;  /* tcp_sock.bytes_retrans */
	__u32 segs_out;
	__u32 segs_in;
	__u32 total_retrans; /* retransmitted segments */
	__u32 srtt_us;       /* smoothed RTT */
	__u32 min_rtt_us;    /* 0 = no sample; the kernel keeps ~0U when it has none */
	__u32 flags;         /* CONN_F_* */
};

/* A transition that ends a connection, with the connection's figures. */
struct event_with_stats {
	struct event event;
	struct conn_stats stats;
};

/* A process that holds a socket open. */
struct owner {
	__u32 pid;
	__u32 pad;
	char comm[TASK_COMM_LEN];
	__u64 task; /* its task_struct (the group leader), to read its name and check it lives */
};

/*
 * A socket file and its holder, as the iter/task_file program finds them. With hooks only TCP
 * sockets are written, with their state, namespace and port (to seed listeners' owners).
 */
struct owner_record {
	__u64 skaddr;
	struct owner owner;
	__u32 netns;
	__u16 lport;
	__u8 state;
	__u8 pad;
};

/* A listening socket's place, where its accepted children find it: namespace and local port. */
struct listener_key {
	__u32 netns;
	__u16 lport;
	__u16 pad;
};

/* Who owns the listener at a listener_key. */
struct listener_owner {
	__u64 skaddr;
	struct owner owner;
};

/* One existing socket as the iter/tcp program finds it. */
struct socket_record {
	__u64 read_ns;  /* CLOCK_BOOTTIME when it was read */
	__u64 since_ns; /* CLOCK_BOOTTIME when it entered its state; 0 = unknown */
	__u64 idle_ns;  /* time since it last sent or received; 0 = unknown */
	__u64 skaddr;   /* as in struct event */
	__u64 twaddr;   /* the timewait socket, for TIME_WAIT; else 0 */
	__u64 cgroup;
	__u32 netns;
	__u32 pid;
	char comm[TASK_COMM_LEN];
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 state;
	__u8 flags; /* EVENT_F_* */
	/* Connection figures (ss -i), for sockets other than listeners and timewait ones. */
	__u32 srtt_us;
	__u32 total_retrans;
	__u32 packets_out;    /* segments sent and not yet acknowledged */
	__u32 bytes_in_flight; /* snd_nxt - snd_una */
};

#endif /* TCPSTATES_H */
