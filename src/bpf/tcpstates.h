/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The record layout shared by the BPF program and the Rust side (via the skeleton's types). */
#ifndef TCPSTATES_H
#define TCPSTATES_H

#define TASK_COMM_LEN 16

/* event.kind */
#define EVENT_TRANSITION 1

/* event.flags */
#define EVENT_F_OWNER_KNOWN  (1 << 0) /* pid and comm name the socket's owner */
#define EVENT_F_CGROUP_KNOWN (1 << 1) /* cgroup is the socket's cgroup v2 id */

/* One TCP state transition. Addresses are in network byte order; ports in host order. */
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
	__u8 pad[6];
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
};

#endif /* TCPSTATES_H */
