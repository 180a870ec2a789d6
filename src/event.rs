//! Decoding of the BPF program's ring-buffer records into events.

use std::cell::{Cell, RefCell, RefMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::services::Service;
use crate::skel::types::{self, conn_flags, record_flags, record_kind};
use crate::tcp_state::TcpState;

// SAFETY: `event` is a plain C struct of integers and byte arrays; every bit pattern is valid.
unsafe impl plain::Plain for types::event {}
// SAFETY: as for `event`: integers and byte arrays only.
unsafe impl plain::Plain for types::socket_record {}
// SAFETY: as for `event`: integers only.
unsafe impl plain::Plain for types::conn_stats {}
// SAFETY: as for `event`: integers and byte arrays only.
unsafe impl plain::Plain for types::owner_record {}
// SAFETY: as for `event`: integers and a byte array only.
unsafe impl plain::Plain for types::owner {}
// SAFETY: as for `event`: integers only.
unsafe impl plain::Plain for types::listener_key {}
// SAFETY: as for `event`: integers and a byte array only.
unsafe impl plain::Plain for types::listener_owner {}

/// Size of one record of the task_file program (one-shot snapshots).
pub const OWNER_RECORD_SIZE: usize = std::mem::size_of::<types::owner_record>();

const EVENT_SIZE: usize = std::mem::size_of::<types::event>();

/// Size of one record of the iter/tcp program.
pub const SOCKET_RECORD_SIZE: usize = std::mem::size_of::<types::socket_record>();

/// The process that owns a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
}

/// A kernel command name: up to 15 bytes, not necessarily UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// Takes the bytes up to the first NUL (at most 16).
    pub fn new(raw: &[u8]) -> Comm {
        let len = raw
            .iter()
            .take(16)
            .position(|&b| b == 0)
            .unwrap_or(raw.len().min(16));
        let mut bytes = [0; 16];
        bytes[..len].copy_from_slice(&raw[..len]);
        Comm {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// One TCP state transition.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// CLOCK_BOOTTIME of the transition, in ns.
    pub ts_ns: u64,
    /// CLOCK_BOOTTIME when the socket entered `old`, if the socket was seen doing so.
    pub old_since_ns: Option<u64>,
    /// The connection's socket (for TIME_WAIT: the full socket it came from, when known).
    pub skaddr: u64,
    /// The timewait socket of a TIME_WAIT transition.
    pub twaddr: Option<u64>,
    pub owner: Option<Owner>,
    pub cgroup: Option<u64>,
    /// The service, container or pod of that cgroup, where user space resolved it.
    pub service: Option<Arc<Service>>,
    pub netns: u32,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub old: TcpState,
    pub new: TcpState,
    /// For transitions to CLOSE: the socket's error (ECONNREFUSED, ETIMEDOUT, ...), if any.
    pub error: Option<Errno>,
    /// When this transition ended a connection (and figures were asked for): its figures.
    /// Boxed: most transitions have none, and records are moved around by value.
    pub ended: Option<Box<ConnStats>>,
}

/// An errno value the kernel left on a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u16);

impl Errno {
    /// Its symbolic name, e.g. `ECONNREFUSED`.
    pub fn name(self) -> String {
        format!("{:?}", nix::errno::Errno::from_raw(i32::from(self.0)))
    }
}

/// How a connection lived, read from its socket when it ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// CLOCK_BOOTTIME when it started: its SYN (connect) or its creation (accept).
    pub born_ns: Option<u64>,
    /// Sent and acknowledged, as the kernel counts it (the SYN and a FIN count one each).
    pub bytes_acked: u64,
    /// Received, as the kernel counts it (a FIN counts one).
    pub bytes_received: u64,
    /// Payload sent, retransmissions included.
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub retrans: u32,
    pub srtt_us: u32,
    pub min_rtt_us: Option<u32>,
    pub local_closed_first: bool,
    pub remote_closed_first: bool,
    pub reset_sent: bool,
    pub passive: bool,
    /// The peer's FIN arrived: bytes_received counts it.
    pub fin_received: bool,
    /// Our FIN was acknowledged: bytes_acked counts it.
    pub fin_acked: bool,
}

/// Something that happened to a socket or a TCP packet, other than a state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    Retransmit,
    ResetSent,
    ResetReceived,
    /// A TCP packet dropped, with the kernel's drop reason (enum skb_drop_reason).
    Drop(u32),
}

impl NoticeKind {
    pub fn name(self) -> &'static str {
        match self {
            NoticeKind::Retransmit => "retransmit",
            NoticeKind::ResetSent => "reset_sent",
            NoticeKind::ResetReceived => "reset_received",
            NoticeKind::Drop(_) => "drop",
        }
    }
}

/// A retransmit, reset or drop, with the socket's owner and addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub ts_ns: u64,
    /// The socket, if the packet had one.
    pub skaddr: Option<u64>,
    pub owner: Option<Owner>,
    pub cgroup: Option<u64>,
    /// The service, container or pod of that cgroup, where user space resolved it.
    pub service: Option<Arc<Service>>,
    pub netns: u32,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// The socket's state then; None for a packet without a socket.
    pub state: Option<TcpState>,
}

impl Notice {
    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

/// One decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Transition(Transition),
    Notice(Notice),
    /// An orphaned connection moved, still in FIN_WAIT2 (`old` = `new`), to its timewait
    /// socket `twaddr`: no state change to show, but its figures if it ended, and its new key.
    Handover(Transition),
    /// The socket's holder changed (`owner`), shown by a call it made on the socket; `old` =
    /// `new` = its state. Not a state change.
    Owner(Transition),
}

impl Transition {
    /// Time spent in the old state, in ms with µs resolution; None when unknown.
    pub fn ms_in_old_state(&self) -> Option<f64> {
        self.micros_in_old_state().map(|us| us as f64 / 1_000.0)
    }

    /// Time spent in the old state, in µs; None when unknown.
    pub fn micros_in_old_state(&self) -> Option<u64> {
        Some(self.ts_ns.saturating_sub(self.old_since_ns?) / 1_000)
    }

    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

/// One socket as it existed when the iterator read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Socket {
    /// CLOCK_BOOTTIME when it was read.
    pub read_ns: u64,
    /// CLOCK_BOOTTIME when it entered `state`, if tcpstates saw it do so.
    pub since_ns: Option<u64>,
    /// How long it had not sent or received when read: a lower bound of its time in `state`.
    pub idle_ns: Option<u64>,
    pub skaddr: u64,
    pub twaddr: Option<u64>,
    pub owner: Option<Owner>,
    pub cgroup: Option<u64>,
    /// The service, container or pod of that cgroup, where user space resolved it.
    pub service: Option<Arc<Service>>,
    pub netns: u32,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub state: TcpState,
    /// Processes holding it, where a walk of their files counted them (0: none, an orphan).
    pub holders: Option<u32>,
    /// Figures as `ss -i` shows them (zero for listeners and TIME_WAIT).
    pub info: SocketInfo,
}

/// A socket's live figures, read by the iterator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketInfo {
    pub srtt_us: u32,
    pub retrans: u32,
    /// Segments sent and not acknowledged yet.
    pub unacked: u32,
    /// Bytes sent and not acknowledged yet.
    pub bytes_in_flight: u32,
}

/// One owner record as the task_file program wrote it.
pub fn decode_owner_record(data: &[u8]) -> Option<types::owner_record> {
    let mut raw = types::owner_record::default();
    plain::copy_from_bytes(&mut raw, data).ok()?;
    Some(raw)
}

/// Decodes one owner record: the socket and the process holding it.
pub fn decode_owner(data: &[u8]) -> Option<(u64, Owner)> {
    let raw = decode_owner_record(data)?;
    Some((
        raw.skaddr,
        Owner {
            pid: raw.owner.pid,
            comm: Comm::new(&raw.owner.comm.map(|c| c as u8)),
        },
    ))
}

/// Decodes one iter/tcp record.
pub fn decode_socket(data: &[u8]) -> Result<Socket> {
    let mut raw = types::socket_record::default();
    if plain::copy_from_bytes(&mut raw, data).is_err() {
        bail!("short socket record: {} bytes", data.len());
    }
    let (local, remote) = addresses(raw.family, &raw.saddr, &raw.daddr)?;
    Ok(Socket {
        read_ns: raw.read_ns,
        since_ns: (raw.since_ns != 0).then_some(raw.since_ns),
        idle_ns: (raw.idle_ns != 0).then_some(raw.idle_ns),
        skaddr: raw.skaddr,
        twaddr: (raw.twaddr != 0).then_some(raw.twaddr),
        owner: owner(raw.flags, raw.pid, &raw.comm),
        cgroup: has(raw.flags, record_flags::EVENT_F_CGROUP_KNOWN).then_some(raw.cgroup),
        service: None,
        netns: raw.netns,
        local,
        local_port: raw.sport,
        remote,
        remote_port: raw.dport,
        state: state(raw.state)?,
        holders: None,
        info: SocketInfo {
            srtt_us: raw.srtt_us,
            retrans: raw.total_retrans,
            unacked: raw.packets_out,
            bytes_in_flight: raw.bytes_in_flight,
        },
    })
}

fn state(n: u8) -> Result<TcpState> {
    TcpState::from_kernel(n).ok_or_else(|| anyhow::anyhow!("unknown TCP state {n}"))
}

fn addresses(family: u16, saddr: &[u8; 16], daddr: &[u8; 16]) -> Result<(IpAddr, IpAddr)> {
    Ok(match i32::from(family) {
        libc::AF_INET => (ipv4(saddr), ipv4(daddr)),
        libc::AF_INET6 => (
            IpAddr::V6(Ipv6Addr::from(*saddr)),
            IpAddr::V6(Ipv6Addr::from(*daddr)),
        ),
        family => bail!("unknown address family {family}"),
    })
}

fn owner(flags: u8, pid: u32, comm: &[i8; 16]) -> Option<Owner> {
    has(flags, record_flags::EVENT_F_OWNER_KNOWN).then(|| Owner {
        pid,
        comm: Comm::new(&comm.map(|c| c as u8)),
    })
}

/// Records decoded from the ring buffer, waiting for the main loop to take them.
#[derive(Debug, Default)]
pub struct Inbox {
    pending: RefCell<Vec<Record>>,
    undecodable: Cell<u64>,
}

impl Inbox {
    /// The ring buffer's callback: decodes one record (0 = go on).
    pub fn receive(&self, data: &[u8]) -> i32 {
        match decode(data) {
            Ok(t) => self.pending.borrow_mut().push(t),
            Err(_) => self.undecodable.set(self.undecodable.get() + 1),
        }
        0
    }

    /// The records received so far; drain them.
    pub fn take(&self) -> RefMut<'_, Vec<Record>> {
        self.pending.borrow_mut()
    }

    /// Records that were not understood (a newer BPF program, or a bug).
    pub fn undecodable(&self) -> u64 {
        self.undecodable.get()
    }
}

/// Decodes one ring-buffer record.
pub fn decode(data: &[u8]) -> Result<Record> {
    let mut raw = types::event::default();
    if plain::copy_from_bytes(&mut raw, data).is_err() {
        bail!("short record: {} bytes", data.len());
    }
    let kind = match record_kind(raw.kind.into()) {
        record_kind::EVENT_TRANSITION => {
            return decode_transition(&raw, &data[EVENT_SIZE..]).map(Record::Transition)
        }
        record_kind::EVENT_HANDOVER => {
            return decode_transition(&raw, &data[EVENT_SIZE..]).map(Record::Handover)
        }
        record_kind::EVENT_OWNER => {
            return decode_transition(&raw, &data[EVENT_SIZE..]).map(Record::Owner)
        }
        record_kind::EVENT_RETRANSMIT => NoticeKind::Retransmit,
        record_kind::EVENT_RESET_SENT => NoticeKind::ResetSent,
        record_kind::EVENT_RESET_RECEIVED => NoticeKind::ResetReceived,
        record_kind::EVENT_DROP => NoticeKind::Drop(raw.detail),
        record_kind(kind) => bail!("unknown record kind {kind}"),
    };
    let (local, remote) = addresses(raw.family, &raw.saddr, &raw.daddr)?;
    Ok(Record::Notice(Notice {
        kind,
        ts_ns: raw.ts_ns,
        skaddr: (raw.skaddr != 0).then_some(raw.skaddr),
        owner: owner(raw.flags, raw.pid, &raw.comm),
        cgroup: has(raw.flags, record_flags::EVENT_F_CGROUP_KNOWN).then_some(raw.cgroup),
        service: None,
        netns: raw.netns,
        local,
        local_port: raw.sport,
        remote,
        remote_port: raw.dport,
        state: TcpState::from_kernel(raw.oldstate),
    }))
}

/// Decodes a transition; `rest` holds the connection's figures when it ended one.
fn decode_transition(raw: &types::event, rest: &[u8]) -> Result<Transition> {
    let ended = if has(raw.flags, record_flags::EVENT_F_STATS) {
        let mut stats = types::conn_stats::default();
        if plain::copy_from_bytes(&mut stats, rest).is_err() {
            bail!("short connection record: {} bytes", EVENT_SIZE + rest.len());
        }
        Some(Box::new(conn_stats(&stats)))
    } else {
        None
    };
    let (local, remote) = addresses(raw.family, &raw.saddr, &raw.daddr)?;
    Ok(Transition {
        ts_ns: raw.ts_ns,
        old_since_ns: (raw.prev_ts_ns != 0).then_some(raw.prev_ts_ns),
        skaddr: raw.skaddr,
        twaddr: (raw.twaddr != 0).then_some(raw.twaddr),
        owner: owner(raw.flags, raw.pid, &raw.comm),
        cgroup: has(raw.flags, record_flags::EVENT_F_CGROUP_KNOWN).then_some(raw.cgroup),
        service: None,
        netns: raw.netns,
        local,
        local_port: raw.sport,
        remote,
        remote_port: raw.dport,
        old: state(raw.oldstate)?,
        new: state(raw.newstate)?,
        error: (raw.error != 0).then_some(Errno(raw.error)),
        ended,
    })
}

fn conn_stats(raw: &types::conn_stats) -> ConnStats {
    ConnStats {
        born_ns: (raw.born_ns != 0).then_some(raw.born_ns),
        bytes_acked: raw.bytes_acked,
        bytes_received: raw.bytes_received,
        bytes_sent: raw.bytes_sent,
        bytes_retrans: raw.bytes_retrans,
        segs_out: raw.segs_out,
        segs_in: raw.segs_in,
        retrans: raw.total_retrans,
        srtt_us: raw.srtt_us,
        min_rtt_us: (raw.min_rtt_us != 0).then_some(raw.min_rtt_us),
        local_closed_first: raw.flags & conn_flags::CONN_F_LOCAL_CLOSED_FIRST.0 != 0,
        remote_closed_first: raw.flags & conn_flags::CONN_F_REMOTE_CLOSED_FIRST.0 != 0,
        reset_sent: raw.flags & conn_flags::CONN_F_RESET_SENT.0 != 0,
        passive: raw.flags & conn_flags::CONN_F_PASSIVE.0 != 0,
        fin_received: raw.flags & conn_flags::CONN_F_FIN_RECEIVED.0 != 0,
        fin_acked: raw.flags & conn_flags::CONN_F_FIN_ACKED.0 != 0,
    }
}

/// Is `flag` set in a record's flags byte?
fn has(flags: u8, flag: record_flags) -> bool {
    u32::from(flags) & flag.0 != 0
}

fn ipv4(bytes: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(f: record_flags) -> u8 {
        f.0 as u8
    }

    fn kind(k: record_kind) -> u8 {
        k.0 as u8
    }

    fn raw_event() -> types::event {
        let mut e = types::event {
            ts_ns: 5_000_000,
            prev_ts_ns: 3_765_432,
            skaddr: 0xffff_8880_1234_5678,
            cgroup: 77,
            netns: 4026531840,
            pid: 4242,
            family: libc::AF_INET as u16,
            sport: 8080,
            dport: 51000,
            oldstate: 2,
            newstate: 1,
            flags: flag(record_flags::EVENT_F_OWNER_KNOWN)
                | flag(record_flags::EVENT_F_CGROUP_KNOWN),
            kind: kind(record_kind::EVENT_TRANSITION),
            ..Default::default()
        };
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        for (dst, src) in e.comm.iter_mut().zip(b"curl\0") {
            *dst = *src as i8;
        }
        e
    }

    fn bytes(e: &types::event) -> Vec<u8> {
        // SAFETY: `event` is Plain, so viewing it as bytes is sound.
        unsafe { plain::as_bytes(e) }.to_vec()
    }

    fn transition(data: &[u8]) -> Transition {
        match decode(data).unwrap() {
            Record::Transition(t) => t,
            other => panic!("not a transition: {other:?}"),
        }
    }

    #[test]
    fn a_handover_is_its_own_record() {
        let mut e = raw_event();
        e.kind = kind(record_kind::EVENT_HANDOVER);
        (e.oldstate, e.newstate, e.twaddr) = (5, 5, 0xffff_2222);
        match decode(&bytes(&e)).unwrap() {
            Record::Handover(t) => {
                assert_eq!((t.old, t.new), (TcpState::FinWait2, TcpState::FinWait2));
                assert_eq!(t.twaddr, Some(0xffff_2222));
            }
            other => panic!("not a handover: {other:?}"),
        }
    }

    #[test]
    fn a_change_of_holder_is_its_own_record() {
        let mut e = raw_event();
        e.kind = kind(record_kind::EVENT_OWNER);
        (e.oldstate, e.newstate) = (1, 1);
        match decode(&bytes(&e)).unwrap() {
            Record::Owner(t) => {
                assert_eq!(t.owner.map(|o| o.pid), Some(4242));
                assert_eq!(
                    (t.old, t.new),
                    (TcpState::Established, TcpState::Established)
                );
            }
            other => panic!("not an owner record: {other:?}"),
        }
    }

    #[test]
    fn decodes_the_figures_of_an_ended_connection() {
        let mut e = raw_event();
        e.newstate = 7;
        e.flags |= flag(record_flags::EVENT_F_STATS);
        e.error = 111;
        let stats = types::conn_stats {
            born_ns: 1_000,
            bytes_acked: 10_001,
            bytes_received: 21,
            segs_out: 9,
            total_retrans: 2,
            srtt_us: 150,
            min_rtt_us: 0,
            flags: conn_flags::CONN_F_REMOTE_CLOSED_FIRST.0 | conn_flags::CONN_F_PASSIVE.0,
            ..Default::default()
        };
        let mut data = bytes(&e);
        // SAFETY: `conn_stats` is Plain, so viewing it as bytes is sound.
        data.extend_from_slice(unsafe { plain::as_bytes(&stats) });
        let t = transition(&data);
        assert_eq!(t.error.map(Errno::name).as_deref(), Some("ECONNREFUSED"));
        let got = t.ended.unwrap();
        assert_eq!(got.born_ns, Some(1_000));
        assert_eq!((got.bytes_acked, got.bytes_received), (10_001, 21));
        assert_eq!((got.segs_out, got.retrans, got.srtt_us), (9, 2, 150));
        assert_eq!(got.min_rtt_us, None);
        assert!(got.remote_closed_first && got.passive);
        assert!(!got.local_closed_first && !got.reset_sent);
        // The flag without the figures is a broken record.
        assert!(decode(&bytes(&e)).is_err());
    }

    #[test]
    fn decodes_a_drop_without_a_socket() {
        let mut e = raw_event();
        e.kind = kind(record_kind::EVENT_DROP);
        e.detail = 2;
        e.skaddr = 0;
        e.oldstate = 0;
        e.flags = 0;
        match decode(&bytes(&e)).unwrap() {
            Record::Notice(n) => {
                assert_eq!(n.kind, NoticeKind::Drop(2));
                assert_eq!((n.skaddr, n.state, n.owner), (None, None, None));
                assert_eq!(n.local_port, 8080);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_an_ipv4_transition() {
        let t = transition(&bytes(&raw_event()));
        assert_eq!(t.local, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(t.remote, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((t.local_port, t.remote_port), (8080, 51000));
        assert_eq!((t.old, t.new), (TcpState::SynSent, TcpState::Established));
        let owner = t.owner.unwrap();
        assert_eq!((owner.pid, owner.comm.as_bytes()), (4242, &b"curl"[..]));
        assert_eq!(t.cgroup, Some(77));
        assert_eq!(t.ms_in_old_state(), Some(1.234));
        assert_eq!(t.twaddr, None);
    }

    #[test]
    fn decodes_an_ipv6_transition() {
        let mut e = raw_event();
        e.family = libc::AF_INET6 as u16;
        e.saddr = Ipv6Addr::LOCALHOST.octets();
        e.daddr = "::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let t = transition(&bytes(&e));
        assert_eq!(t.local.to_string(), "::1");
        assert_eq!(t.remote.to_string(), "::ffff:10.0.0.1");
        assert!(t.is_ipv6());
    }

    #[test]
    fn unknowns_stay_unknown() {
        let mut e = raw_event();
        e.flags = 0;
        e.prev_ts_ns = 0;
        e.twaddr = 0xffff_1111;
        let t = transition(&bytes(&e));
        assert_eq!(t.owner, None);
        assert_eq!(t.cgroup, None);
        assert_eq!(t.ms_in_old_state(), None);
        assert_eq!(t.twaddr, Some(0xffff_1111));
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(&[0u8; 10]).is_err());
        let mut e = raw_event();
        e.newstate = 99;
        assert_eq!(
            decode(&bytes(&e)).unwrap_err().to_string(),
            "unknown TCP state 99"
        );
        let mut e = raw_event();
        e.family = 1;
        assert!(decode(&bytes(&e)).is_err());
    }

    #[test]
    fn comm_stops_at_nul_and_at_16_bytes() {
        assert_eq!(Comm::new(b"ab\0cd").as_bytes(), b"ab");
        assert_eq!(Comm::new(&[b'x'; 20]).as_bytes(), &[b'x'; 16]);
    }
}
