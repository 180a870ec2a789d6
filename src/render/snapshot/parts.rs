//! A long list written on several threads at once, in order, a round at a time: what waits in
//! memory is one round's parts, not half of the output (a 100,000-connection JSON snapshot
//! held 26 MB of its text that way, as much as its table).

use std::io::{self, Write};

/// Below this many items per thread, one thread writes them all: a thread costs more than it
/// saves.
pub const MIN_PER_THREAD: usize = 20_000;
/// Items each thread renders per round.
const PER_THREAD_PER_ROUND: usize = 8_192;

/// Threads for a list of `len` items: one per core, each with MIN_PER_THREAD at least.
fn threads_for(len: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(len / MIN_PER_THREAD)
        .max(1)
}

/// `each` of every part of `items`, in order, the parts taken on several threads at once for a
/// long list (a pass that writes nothing, such as measuring columns).
pub fn map_in_parts<T: Sync, R: Send>(
    items: &[T],
    each: impl Fn(&[T]) -> R + Sync,
) -> io::Result<Vec<R>> {
    let each = &each;
    let mut parts = items.chunks(items.len().div_ceil(threads_for(items.len())).max(1));
    let Some(mine) = parts.next() else {
        return Ok(Vec::new());
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = parts.map(|part| scope.spawn(move || each(part))).collect();
        let mut all = vec![each(mine)];
        for other in others {
            all.push(
                other
                    .join()
                    .map_err(|_| io::Error::other("a snapshot writer thread panicked"))?,
            );
        }
        Ok(all)
    })
}

/// Writes `items` to `out` in order, as `render(buf, part, first)` writes each part into a
/// buffer (`first`: the part starts the list).
pub fn write_in_rounds<T: Sync>(
    out: &mut (impl Write + ?Sized),
    items: &[T],
    render: impl Fn(&mut Vec<u8>, &[T], bool) -> io::Result<()> + Sync,
) -> io::Result<()> {
    let threads = threads_for(items.len());
    let render = &render;
    let mut own = Vec::new();
    for (round, batch) in items.chunks(threads * PER_THREAD_PER_ROUND).enumerate() {
        let mut parts = batch.chunks(batch.len().div_ceil(threads));
        let Some(mine) = parts.next() else {
            continue;
        };
        std::thread::scope(|scope| -> io::Result<()> {
            let others: Vec<_> = parts
                .map(|part| {
                    scope.spawn(move || {
                        let mut buf = Vec::new();
                        render(&mut buf, part, false).map(|()| buf)
                    })
                })
                .collect();
            own.clear();
            render(&mut own, mine, round == 0)?;
            out.write_all(&own)?;
            for other in others {
                let buf = other
                    .join()
                    .map_err(|_| io::Error::other("a snapshot writer thread panicked"))??;
                out.write_all(&buf)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_written_once_in_order_with_the_first_part_marked() {
        for count in [0, 1, 7, MIN_PER_THREAD - 1, 3 * MIN_PER_THREAD + 5] {
            let items: Vec<usize> = (0..count).collect();
            let mut out = Vec::new();
            write_in_rounds(&mut out, &items, |buf, part, first| {
                for (i, n) in part.iter().enumerate() {
                    if !(first && i == 0) {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(n.to_string().as_bytes());
                }
                Ok(())
            })
            .unwrap();
            let expected: Vec<String> = items.iter().map(usize::to_string).collect();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected.join(","),
                "{count}"
            );
        }
    }

    #[test]
    fn every_part_is_mapped_once_in_order() {
        for count in [0, 1, MIN_PER_THREAD - 1, 3 * MIN_PER_THREAD + 5] {
            let items: Vec<usize> = (0..count).collect();
            let parts = map_in_parts(&items, <[usize]>::to_vec).unwrap();
            assert_eq!(parts.concat(), items, "{count}");
            let expected = if count == 0 { 0 } else { threads_for(count) };
            assert_eq!(parts.len(), expected, "{count}");
        }
    }

    #[test]
    fn a_failing_part_fails_the_write() {
        let items: Vec<usize> = (0..3 * MIN_PER_THREAD).collect();
        let err = write_in_rounds(&mut Vec::new(), &items, |_, part, _| {
            if part.contains(&(2 * MIN_PER_THREAD)) {
                Err(io::ErrorKind::BrokenPipe.into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
