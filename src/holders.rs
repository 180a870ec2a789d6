//! Who holds each socket, as a walk of every process's files (the task_file iterator) finds
//! it: the process `ss -p` lists first, the one with the lowest PID, and how many hold it.

use rustc_hash::FxHashMap;

use crate::event::Owner;

/// The holders of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The one a socket held by several processes is named by: the lowest PID, every time.
    pub owner: Owner,
    /// Processes holding it (a process with several descriptors of it counts once).
    pub holders: u32,
}

/// Every socket the walk found, by socket address.
#[derive(Debug, Default)]
pub struct Holdings {
    by_socket: FxHashMap<u64, (Holding, u32)>,
}

impl Holdings {
    /// One descriptor of socket `skaddr` held by `owner`. The walk visits processes in PID
    /// order, each one's descriptors together: the first holder found is the lowest PID, and
    /// a process seen again right after itself is the same holder.
    pub fn add(&mut self, skaddr: u64, owner: Owner) {
        let (holding, last_pid) = self
            .by_socket
            .entry(skaddr)
            .or_insert((Holding { owner, holders: 0 }, 0));
        if *last_pid != owner.pid || holding.holders == 0 {
            holding.holders += 1;
            *last_pid = owner.pid;
        }
    }

    pub fn get(&self, skaddr: u64) -> Option<&Holding> {
        self.by_socket.get(&skaddr).map(|(holding, _)| holding)
    }

    pub fn len(&self) -> usize {
        self.by_socket.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_socket.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Comm;

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            comm: Comm::new(b"nginx"),
        }
    }

    #[test]
    fn a_shared_listener_is_named_by_its_lowest_pid_and_counted_once_per_process() {
        let mut walk = Holdings::default();
        // The master's two descriptors of the listener, then two workers', in PID order.
        for (skaddr, pid) in [(1, 100), (1, 100), (2, 100), (1, 101), (1, 102), (3, 102)] {
            walk.add(skaddr, owner(pid));
        }
        assert_eq!(
            walk.get(1),
            Some(&Holding {
                owner: owner(100),
                holders: 3
            })
        );
        assert_eq!(
            walk.get(3).map(|h| (h.owner.pid, h.holders)),
            Some((102, 1))
        );
        assert_eq!(walk.get(4), None);
        assert_eq!(walk.len(), 3);
    }
}
