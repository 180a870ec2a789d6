//! The kernel's TCP socket counters, as /proc/net/sockstat shows them for the reader's network
//! namespace: what map and table sizes are taken from.

/// A count of the TCP line (`TCP: inuse 5 orphan 0 tw 2 alloc 9 mem 1`): `inuse` and `tw` are
/// the namespace's, `alloc` every full socket of the host.
pub fn tcp_count(text: &str, field: &str) -> Option<u64> {
    let tcp = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut words = tcp.split_whitespace();
    while let Some(word) = words.next() {
        if word == field {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_the_tcp_line() {
        let text =
            "sockets: used 230\nTCP: inuse 5 orphan 1 tw 2 alloc 9 mem 1\nUDP: inuse 3 mem 0\n";
        assert_eq!(tcp_count(text, "inuse"), Some(5));
        assert_eq!(tcp_count(text, "tw"), Some(2));
        assert_eq!(tcp_count(text, "alloc"), Some(9));
        assert_eq!(tcp_count(text, "mem"), Some(1));
        assert_eq!(tcp_count(text, "nope"), None);
        assert_eq!(tcp_count("UDP: inuse 3 mem 0\n", "inuse"), None);
    }
}
