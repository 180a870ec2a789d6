//! Owners of the sockets that existed before the hooks were attached: the task_file walk finds
//! them, and they are written where the hooks look for an owner they did not see being set
//! (the `seeds` map, by socket, and the `listeners` map, by namespace and port).

use anyhow::{Context, Result};
use rustc_hash::FxHashMap;

use crate::skel::types;
use crate::sockstat;
use crate::tcp_state::TcpState;

/// Bounds of the seed maps' sizes (each slot costs a 16-byte bucket when the map is created).
const SEEDS_MIN: u32 = 1024;
const SEEDS_MAX: u32 = 1 << 20;
const LISTENERS_MAX: u32 = 1 << 16;

/// Entries for the `seeds` and `listeners` maps, from the kernel's count of allocated TCP
/// sockets (all namespaces), with room for those opened before the walk.
pub fn map_sizes(sockstat: Option<&str>) -> (u32, u32) {
    let allocated = sockstat
        .and_then(|text| sockstat::tcp_count(text, "alloc"))
        .unwrap_or(0);
    let seeds = (allocated + allocated / 4 + u64::from(SEEDS_MIN))
        .clamp(u64::from(SEEDS_MIN), u64::from(SEEDS_MAX)) as u32;
    (seeds, seeds.min(LISTENERS_MAX))
}

/// What the walk found, ready for the maps: each socket once (the first holder found, as
/// `ss -p` lists it first), and each listener's place once.
#[derive(Debug, Default)]
pub struct Seeds {
    pub sockets: Vec<u64>,
    pub owners: Vec<types::owner>,
    pub places: Vec<types::listener_key>,
    pub listeners: Vec<types::listener_owner>,
}

impl Seeds {
    pub fn from_records(records: impl IntoIterator<Item = types::owner_record>) -> Seeds {
        let mut first: FxHashMap<u64, types::owner_record> = FxHashMap::default();
        for record in records {
            first.entry(record.skaddr).or_insert(record);
        }
        let mut seeds = Seeds::default();
        let mut places = FxHashMap::default();
        for record in first.into_values() {
            seeds.sockets.push(record.skaddr);
            seeds.owners.push(record.owner);
            if record.state == TcpState::Listen as u8 {
                let place = (record.netns, record.lport);
                // SO_REUSEPORT listeners of several processes share a place: keep the lowest
                // socket address, so that the choice does not depend on the hash's order.
                let keep = places
                    .get(&place)
                    .is_none_or(|kept: &types::owner_record| record.skaddr < kept.skaddr);
                if keep {
                    places.insert(place, record);
                }
            }
        }
        for ((netns, lport), record) in places {
            seeds.places.push(types::listener_key {
                netns,
                lport,
                ..Default::default()
            });
            seeds.listeners.push(types::listener_owner {
                skaddr: record.skaddr,
                owner: record.owner,
            });
        }
        seeds
    }
}

/// Writes `keys[i] -> values[i]` into `map`, in batches; returns how many the map took (it
/// refuses the rest when full).
pub fn write_map<K: plain::Plain, V: plain::Plain>(
    map: &dyn libbpf_rs::MapCore,
    keys: &[K],
    values: &[V],
) -> Result<usize> {
    const BATCH: usize = 4096;
    let mut written = 0;
    for (keys, values) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        // SAFETY: K and V are Plain: integers and byte arrays without padding, so every byte
        // of them is initialised.
        let (key_bytes, value_bytes) = unsafe { (plain::as_bytes(keys), plain::as_bytes(values)) };
        let count = keys.len() as u32;
        let flags = libbpf_rs::MapFlags::ANY;
        if map
            .update_batch(
                key_bytes,
                value_bytes,
                count,
                flags,
                libbpf_rs::MapFlags::empty(),
            )
            .is_err()
        {
            // A full map stops a batch part way: go on one by one to count what fits.
            for (key, value) in keys.iter().zip(values) {
                // SAFETY: as above.
                let (k, v) = unsafe { (plain::as_bytes(key), plain::as_bytes(value)) };
                match map.update(k, v, flags) {
                    Ok(()) => written += 1,
                    Err(err) if err.kind() == libbpf_rs::ErrorKind::TooBig => return Ok(written),
                    Err(err) => return Err(err).context("writing the owners of existing sockets"),
                }
            }
            continue;
        }
        written += keys.len();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(skaddr: u64, pid: u32, state: u8, lport: u16) -> types::owner_record {
        types::owner_record {
            skaddr,
            owner: types::owner {
                pid,
                ..Default::default()
            },
            netns: 7,
            lport,
            state,
            ..Default::default()
        }
    }

    #[test]
    fn sizes_follow_the_kernels_socket_count() {
        let sockstat = "sockets: used 7\nTCP: inuse 1 orphan 0 tw 0 alloc 80000 mem 256\n";
        assert_eq!(map_sizes(Some(sockstat)), (101_024, 65_536));
        let small = "TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 256\n";
        assert_eq!(map_sizes(Some(small)), (1025, 1025));
        assert_eq!(map_sizes(None), (1024, 1024));
        let huge = "TCP: inuse 1 orphan 0 tw 0 alloc 9000000 mem 256\n";
        assert_eq!(map_sizes(Some(huge)), (1 << 20, 1 << 16));
    }

    #[test]
    fn each_socket_once_with_its_first_holder_and_listeners_by_place() {
        let seeds = Seeds::from_records([
            record(0x100, 1, 1, 80),
            record(0x100, 2, 1, 80), // a second holder of the same socket
            record(0x300, 3, TcpState::Listen as u8, 8080),
            record(0x200, 4, TcpState::Listen as u8, 8080), // SO_REUSEPORT: same place, lower address
        ]);
        let mut pairs: Vec<(u64, u32)> = seeds
            .sockets
            .iter()
            .zip(&seeds.owners)
            .map(|(s, o)| (*s, o.pid))
            .collect();
        pairs.sort();
        assert_eq!(pairs, [(0x100, 1), (0x200, 4), (0x300, 3)]);
        assert_eq!(seeds.places.len(), 1);
        assert_eq!((seeds.places[0].netns, seeds.places[0].lport), (7, 8080));
        assert_eq!(seeds.listeners[0].skaddr, 0x200);
        assert_eq!(seeds.listeners[0].owner.pid, 4);
    }
}
