//! TCP states as the kernel numbers and names them (include/net/tcp_states.h).

use std::fmt;
use std::str::FromStr;

/// A TCP socket state. The discriminants are the kernel's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
    BoundInactive = 13,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 13] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
        TcpState::BoundInactive,
    ];

    /// The state with the kernel's number `n`, if there is one.
    pub fn from_kernel(n: u8) -> Option<TcpState> {
        TcpState::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The kernel's name, as `tcp_states` in BCC and `/proc/net/tcp` documentation use it.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
            TcpState::BoundInactive => "BOUND_INACTIVE",
        }
    }

    /// The bit of this state in the BPF program's state filter.
    pub fn mask(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The error for a name that is not a TCP state.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
        write!(
            f,
            "unknown TCP state '{}' (expected one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownState {}

impl FromStr for TcpState {
    type Err = UnknownState;

    /// Accepts the kernel's names in any case, with `-` or `_` (`ss` writes `close-wait`).
    fn from_str(s: &str) -> Result<TcpState, UnknownState> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        TcpState::ALL
            .iter()
            .copied()
            .find(|state| state.name() == wanted)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_round_trip() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(state as u8), Some(state));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(14), None);
        assert_eq!(TcpState::from_kernel(6), Some(TcpState::TimeWait));
    }

    #[test]
    fn parses_kernel_and_ss_spellings() {
        assert_eq!("TIME_WAIT".parse(), Ok(TcpState::TimeWait));
        assert_eq!("close-wait".parse(), Ok(TcpState::CloseWait));
        assert_eq!("fin_wait2".parse(), Ok(TcpState::FinWait2));
        assert_eq!(" Listen ".parse(), Ok(TcpState::Listen));
    }

    #[test]
    fn rejects_unknown_names_listing_the_valid_ones() {
        let err = "FOO".parse::<TcpState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown TCP state 'FOO' (expected one of: ESTABLISHED, SYN_SENT, SYN_RECV, \
             FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, \
             NEW_SYN_RECV, BOUND_INACTIVE)"
        );
    }

    #[test]
    fn display_pads_like_a_str() {
        assert_eq!(format!("{:<11}|", TcpState::Listen), "LISTEN     |");
    }
}
