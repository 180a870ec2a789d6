//! Escaping of text that came from the kernel or other processes before anyone displays it.

use std::borrow::Cow;
use std::fmt::Write;

/// Printable text passes unchanged; control characters, invalid UTF-8 and `\` become `\xNN`/`\\`,
/// so a process cannot drive the reader's terminal through its command name.
pub fn escape(bytes: &[u8]) -> Cow<'_, str> {
    // The usual case, printable ASCII, checked byte by byte rather than char by char.
    if bytes
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\')
    {
        // SAFETY: every byte is printable ASCII, which is UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.chars().any(|c| c.is_control() || c == '\\') {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed() {
        assert!(matches!(
            escape(b"nginx: worker"),
            Cow::Borrowed("nginx: worker")
        ));
        assert_eq!(escape("café".as_bytes()), "café");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape(b"evil\x1b[2J"), "evil\\x1b[2J");
        assert_eq!(escape(b"a\tb\x7f"), "a\\x09b\\x7f");
        assert_eq!(escape("x\u{9b}y".as_bytes()), "x\\xc2\\x9by");
    }

    #[test]
    fn invalid_utf8_and_backslashes_are_escaped() {
        assert_eq!(escape(b"\xffok"), "\\xffok");
        assert_eq!(escape(b"a\\b"), "a\\\\b");
    }
}
