//! The full-screen terminal of --top: raw mode and the alternate screen while it runs, and the
//! terminal as it was on every way out (quit, a signal, an error, a panic, a dropped guard).

use std::fs::File;
use std::io::{self, Stdout};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

/// Whether the terminal is in --top's mode now (restoring twice would print escape codes twice).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// Owns the full-screen terminal; dropping it gives the terminal back.
pub struct FullScreen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
    /// The controlling terminal, watched for a hangup: crossterm reads a hung-up terminal's
    /// endless end-of-file in a loop that never returns.
    tty: Option<File>,
}

impl FullScreen {
    pub fn enter() -> Result<FullScreen> {
        // A panic prints its message on the restored screen, not into the alternate one.
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().context("setting the terminal to raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .context("switching to the alternate screen");
        let terminal = entered.and_then(|()| {
            Terminal::new(CrosstermBackend::new(io::stdout())).context("opening the terminal")
        });
        match terminal {
            Ok(terminal) => Ok(FullScreen {
                terminal,
                tty: File::open("/dev/tty").ok(),
            }),
            Err(err) => {
                restore();
                Err(err)
            }
        }
    }
}

impl FullScreen {
    /// Has the terminal gone (its window closed, the session killed, the line dropped)?
    pub fn hung_up(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some(tty) = &self.tty else {
            return false;
        };
        let mut fds = [PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0].revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
            }),
            Err(_) => false,
        }
    }
}

impl Drop for FullScreen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode, once; errors are ignored (the terminal may be
/// gone, and there is nowhere left to report them).
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
}
