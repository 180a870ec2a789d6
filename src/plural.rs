//! Counts in words for the messages on stderr: `1 alert`, `2 alerts`.

/// `n` and `noun`, the noun with an `s` unless `n` is 1 (every noun we count takes an `s`).
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(counted(0, "alert"), "0 alerts");
        assert_eq!(counted(1, "alert"), "1 alert");
        assert_eq!(counted(2, "TIME_WAIT socket"), "2 TIME_WAIT sockets");
    }
}
