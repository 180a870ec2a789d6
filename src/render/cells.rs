//! Fixed-width text cells and IPv4 addresses written without `core::fmt`: on the per-event
//! path its machinery (padding, `Display` of each octet) cost more than the rest of a line.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Serialize, Serializer};

/// `text` left-aligned in `width` columns, then one space: what `{text:<width$} ` writes.
pub fn cell(out: &mut Vec<u8>, text: &str, width: usize) {
    out.extend_from_slice(text.as_bytes());
    let shown = if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    };
    end_cell(out, shown, width);
}

/// Pads a cell of `shown` columns, just written, to `width`, and ends it with a space.
fn end_cell(out: &mut Vec<u8>, shown: usize, width: usize) {
    out.resize(out.len() + width.saturating_sub(shown), b' ');
    out.push(b' ');
}

/// An integer as a cell.
pub fn int_cell(out: &mut Vec<u8>, n: impl itoa::Integer, width: usize) {
    cell(out, itoa::Buffer::new().format(n), width);
}

/// An address as a cell.
pub fn addr_cell(out: &mut Vec<u8>, addr: IpAddr, width: usize) {
    match addr {
        IpAddr::V4(v4) => cell(out, Ipv4Text::new(v4).as_str(), width),
        // Rarer, and with zero compression: std's formatting.
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6:<width$} ");
        }
    }
}

/// `addr:port` as `SocketAddr` shows it (`[v6]:port`), IPv4 without `core::fmt`: two per row
/// of a long snapshot table, twice per table, were most of the time it took.
pub fn push_endpoint(text: &mut String, addr: IpAddr, port: u16) {
    match addr {
        IpAddr::V4(v4) => text.push_str(Ipv4Text::new(v4).as_str()),
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing into a String cannot fail.
            _ = write!(text, "[{v6}]");
        }
    }
    text.push(':');
    text.push_str(itoa::Buffer::new().format(port));
}

/// `us` microseconds as milliseconds with three decimals ("12.345"), in integer arithmetic.
pub fn millis(out: &mut Vec<u8>, us: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(us / 1_000).as_bytes());
    let fraction = us % 1_000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ]);
}

/// Milliseconds as a cell.
pub fn millis_cell(out: &mut Vec<u8>, us: u64, width: usize) {
    let start = out.len();
    millis(out, us);
    end_cell(out, out.len() - start, width);
}

/// Dotted-quad text of an IPv4 address, on the stack.
pub struct Ipv4Text {
    bytes: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    pub fn new(addr: Ipv4Addr) -> Ipv4Text {
        let mut text = Ipv4Text {
            bytes: [0; 15],
            len: 0,
        };
        for (i, octet) in addr.octets().into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            if octet >= 100 {
                text.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                text.push(b'0' + octet / 10 % 10);
            }
            text.push(b'0' + octet % 10);
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: new() writes only ASCII digits and dots, which are UTF-8. (Checking costs a
        // few percent of the JSON writer's time, on every address.)
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..self.len]) }
    }
}

/// Serializes an address as its text, the IPv4 case without `core::fmt`; for
/// `#[serde(serialize_with = "super::cells::serialize_addr")]` on address fields.
pub fn serialize_addr<S: Serializer>(addr: &IpAddr, s: S) -> Result<S::Ok, S::Error> {
    match addr {
        IpAddr::V4(v4) => s.serialize_str(Ipv4Text::new(*v4).as_str()),
        IpAddr::V6(v6) => v6.serialize(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_read_as_socket_addresses_do() {
        for (addr, port) in [
            ("127.0.0.1", 80),
            ("0.0.0.0", 0),
            ("255.255.255.255", 65535),
            ("10.20.3.4", 5432),
            ("::1", 443),
            ("::ffff:192.0.2.1", 8080),
            ("fe80::1:2", 22),
        ] {
            let addr: IpAddr = addr.parse().unwrap();
            let mut text = String::new();
            push_endpoint(&mut text, addr, port);
            assert_eq!(text, std::net::SocketAddr::new(addr, port).to_string());
        }
    }

    #[test]
    fn ipv4_text_is_what_display_writes() {
        for addr in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(10, 99, 100, 255),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(192, 168, 1, 20),
        ] {
            assert_eq!(Ipv4Text::new(addr).as_str(), addr.to_string());
        }
    }

    #[test]
    fn cells_pad_like_format_width() {
        let mut out = Vec::new();
        cell(&mut out, "abc", 5);
        int_cell(&mut out, 8080u16, 5);
        int_cell(&mut out, 123456u32, 3);
        addr_cell(&mut out, "127.0.0.1".parse().unwrap(), 15);
        addr_cell(&mut out, "::1".parse().unwrap(), 15);
        cell(&mut out, "é\\x01", 6);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{:<5} {:<5} {:<3} {:<15} {:<15} {:<6} ",
                "abc", 8080, 123456, "127.0.0.1", "::1", "é\\x01"
            )
        );
    }

    #[test]
    fn millis_has_three_decimals() {
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (1_050, "1.050"),
            (123_456_789, "123456.789"),
        ] {
            let mut out = Vec::new();
            millis(&mut out, us);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }
}
