//! Names of the kernel's packet drop reasons (enum skb_drop_reason), read from its BTF: the
//! values change between kernel versions, the names do not.

use std::collections::HashMap;

use libbpf_rs::btf::{types::Enum, Btf};

const PREFIX: &str = "SKB_DROP_REASON_";

/// Drop reason numbers to names without their prefix, e.g. 2 -> "NO_SOCKET".
#[derive(Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    /// The running kernel's reasons; empty if its BTF has none (numbers are shown instead).
    pub fn from_kernel() -> DropReasons {
        let Ok(btf) = Btf::from_vmlinux() else {
            return DropReasons::default();
        };
        let Some(reasons) = btf.type_by_name::<Enum<'_>>("skb_drop_reason") else {
            return DropReasons::default();
        };
        DropReasons::from_pairs(reasons.iter().filter_map(|member| {
            let name = member.name?.to_str()?;
            Some((u32::try_from(member.value).ok()?, name))
        }))
    }

    fn from_pairs<'a>(pairs: impl Iterator<Item = (u32, &'a str)>) -> DropReasons {
        DropReasons {
            names: pairs
                .map(|(value, name)| (value, name.strip_prefix(PREFIX).unwrap_or(name).to_string()))
                .collect(),
        }
    }

    /// The reason's name, or its number when the kernel did not name it.
    pub fn name(&mut self, reason: u32) -> &str {
        self.names
            .entry(reason)
            .or_insert_with(|| reason.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_prefix_and_unknowns_show_numbers() {
        let mut reasons = DropReasons::from_pairs(
            [
                (2, "SKB_DROP_REASON_NO_SOCKET"),
                (6, "SKB_DROP_REASON_NETFILTER_DROP"),
            ]
            .into_iter(),
        );
        assert_eq!(reasons.name(2), "NO_SOCKET");
        assert_eq!(reasons.name(6), "NETFILTER_DROP");
        assert_eq!(reasons.name(999), "999");
    }

    #[test]
    fn this_kernel_names_no_socket() {
        // Every kernel with drop reasons (5.17+) has NO_SOCKET; this one has BTF.
        let reasons = DropReasons::from_kernel();
        for name in ["NO_SOCKET", "NOT_SPECIFIED", "NETFILTER_DROP"] {
            assert!(reasons.names.values().any(|n| n == name), "{name}");
        }
    }
}
