//! --top against the real kernel, in a real terminal (tmux; needs root): a leak the test makes
//! shows with its holder, count and age within two refreshes, at 80x24 and 160x45; keys filter
//! and narrow; the terminal comes back after q and after SIGTERM; without a terminal, one line.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A tmux session of its own running one command; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    /// Runs `command` in a detached `width`x`height` terminal; a line with its exit status
    /// follows its end, and the pane stays open for reading.
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "tcpstates-top-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        run(
            "tmux",
            &[
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                // The terminal's modes after the command: cooked again, or still raw.
                &format!("{command}; echo EXIT=$?; stty -a; sleep 600"),
            ],
        );
        Tmux { name }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            run("tmux", &["send-keys", "-t", &self.name, key]);
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `within` for the screen to satisfy `check`; returns that screen.
    fn wait_for(&self, within: Duration, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Is the program still on the alternate screen?
    fn alternate_screen(&self) -> bool {
        let out = Command::new("tmux")
            .args(["display", "-p", "-t", &self.name, "#{alternate_on}"])
            .output()
            .expect("tmux display");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// The PID of the command the pane runs (the shell's child: tcpstates).
    fn tool_pid(&self) -> i32 {
        let out = Command::new("tmux")
            .args(["display", "-p", "-t", &self.name, "#{pane_pid}"])
            .output()
            .expect("tmux display");
        let shell: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .expect("tcpstates runs in the pane")
            .parse()
            .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn top_in(ns: &Netns) -> String {
    format!("{} --top 1s --netns {}", tool_path().display(), ns.name)
}

/// A server that never closes what its clients closed: `n` sockets left in CLOSE_WAIT.
fn leak(ns: &Netns, n: usize) -> Peer {
    let mut leaky = Peer::spawn(
        ns,
        &[
            "server",
            "127.0.0.1",
            "8080",
            "--connections",
            &n.to_string(),
            "--hold",
        ],
    );
    leaky.expect("listening ");
    for _ in 0..n {
        Peer::spawn(ns, &["client", "127.0.0.1", "8080", "--orphan"]).finish();
    }
    for held in 1..=n {
        leaky.expect(&format!("holding {held}"));
    }
    leaky
}

/// The holder line of `pid`'s CLOSE_WAIT sockets (in the panels above the connections).
fn holder_line(screen: &str, pid: u32) -> Option<String> {
    screen
        .lines()
        .take_while(|l| !l.contains("CONNECTIONS"))
        .find(|l| l.contains("CLOSE_WAIT") && l.contains(&format!("{pid}/tcp_peer")))
        .map(str::to_string)
}

fn leak_shows_at(width: u16, height: u16) {
    let ns = Netns::new();
    let tmux = Tmux::start(width, height, &top_in(&ns));
    tmux.wait_for(Duration::from_secs(10), "first frame", |s| {
        s.contains("CONNECTIONS")
    });
    let leaky = leak(&ns, 3);
    let made = Instant::now();
    let screen = tmux.wait_for(Duration::from_secs(3), "the leak's holder", |s| {
        holder_line(s, leaky.pid).is_some()
    });
    assert!(
        made.elapsed() < Duration::from_millis(2500),
        "not within two refreshes"
    );
    let line = holder_line(&screen, leaky.pid).unwrap();
    // `CLOSE_WAIT     3 +    1.2s  PID/tcp_peer`: three, growing, an age seen from the start.
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().rposition(|w| *w == "CLOSE_WAIT").unwrap();
    assert_eq!(&words[at + 1..at + 3], ["3", "+"], "{line}");
    let age = words[at + 3];
    assert!(
        age.ends_with("ms") || age.ends_with('s') && age[..age.len() - 1].parse::<f64>().is_ok(),
        "{line}"
    );
    assert_eq!(words[at + 4], format!("{}/tcp_peer", leaky.pid), "{line}");
    // The per-state count and the rows.
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("CLOSE_WAIT") && l.split_whitespace().nth(1) == Some("3")),
        "{screen}"
    );
    if width >= 100 {
        assert!(screen.contains("SERVICE"), "{screen}");
    }
    tmux.keys(&["q"]);
    let screen = tmux.wait_for(Duration::from_secs(5), "the exit", |s| {
        s.contains("EXIT=0") && s.contains("icanon")
    });
    assert_cooked(&screen);
    leaky.finish();
}

/// stty's report says the terminal echoes and reads lines again (raw mode is undone).
fn assert_cooked(screen: &str) {
    let modes: Vec<&str> = screen.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig", "opost"] {
        assert!(modes.contains(&mode), "{mode} is off:\n{screen}");
    }
}

#[test]
fn a_leak_shows_its_holder_count_and_age_at_80x24() {
    leak_shows_at(80, 24);
}

#[test]
fn a_leak_shows_its_holder_count_and_age_at_160x45() {
    leak_shows_at(160, 45);
}

#[test]
fn keys_filter_toggle_states_and_quit_back_to_the_shell() {
    let ns = Netns::new();
    let tmux = Tmux::start(80, 24, &top_in(&ns));
    tmux.wait_for(Duration::from_secs(10), "first frame", |s| {
        s.contains("CONNECTIONS")
    });
    let leaky = leak(&ns, 2);
    let mut other = Peer::spawn(&ns, &["server", "127.0.0.1", "9090"]);
    other.expect("listening ");
    // The leaky server stopped listening after its two: 9090's listener, two CLOSE_WAIT, two
    // orphans in FIN_WAIT2.
    tmux.wait_for(Duration::from_secs(3), "both servers", |s| {
        s.contains("127.0.0.1:9090") && s.contains("CONNECTIONS 5 of 5")
    });
    // A typed filter narrows the table to what matches.
    tmux.keys(&["/", "9090"]);
    tmux.wait_for(Duration::from_secs(2), "the filter being typed", |s| {
        s.contains("Filter: 9090_")
    });
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(Duration::from_secs(2), "the filtered table", |s| {
        s.contains("CONNECTIONS 1 of 5, by state ^, matching \"9090\"")
    });
    let table: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains("CONNECTIONS"))
        .take_while(|l| !l.contains("LATEST TRANSITIONS"))
        .filter(|l| l.contains("127.0.0.1:"))
        .collect();
    assert_eq!(table.len(), 1, "{screen}");
    assert!(table[0].starts_with("LISTEN "), "{screen}");
    // Esc clears the filter; c hides CLOSE_WAIT; a shows every state again.
    tmux.keys(&["Escape", "c"]);
    tmux.wait_for(Duration::from_secs(2), "CLOSE_WAIT hidden", |s| {
        s.contains("CONNECTIONS 3 of 5, by state ^, hiding CLOSE_WAIT")
    });
    tmux.keys(&["a", "?"]);
    tmux.wait_for(Duration::from_secs(2), "the help", |s| {
        s.contains("tcpstates --top: keys")
    });
    tmux.keys(&["Space", "p"]);
    tmux.wait_for(Duration::from_secs(2), "the pause", |s| {
        s.contains("PAUSED")
    });
    // A resize redraws at the new size.
    run(
        "tmux",
        &["resize-window", "-t", &tmux.name, "-x", "160", "-y", "45"],
    );
    tmux.wait_for(Duration::from_secs(2), "the wider table", |s| {
        s.contains("SERVICE")
    });
    assert!(tmux.alternate_screen());
    tmux.keys(&["q"]);
    let screen = tmux.wait_for(Duration::from_secs(5), "the exit", |s| {
        s.contains("EXIT=0") && s.contains("icanon")
    });
    assert!(!tmux.alternate_screen(), "{screen}");
    assert!(screen.contains("snapshots shown"), "{screen}");
    assert_cooked(&screen);
    drop(other);
    leaky.finish();
}

#[test]
fn sigterm_gives_the_terminal_back() {
    let ns = Netns::new();
    let tmux = Tmux::start(80, 24, &top_in(&ns));
    tmux.wait_for(Duration::from_secs(10), "first frame", |s| {
        s.contains("CONNECTIONS")
    });
    assert!(tmux.alternate_screen());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tmux.tool_pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let screen = tmux.wait_for(Duration::from_secs(5), "the exit", |s| {
        s.contains("EXIT=0") && s.contains("icanon")
    });
    assert!(!tmux.alternate_screen(), "{screen}");
    assert_cooked(&screen);
}

#[test]
fn without_a_terminal_it_points_at_snapshot() {
    let out = Command::new(tool_path())
        .arg("--top")
        .output()
        .expect("running tcpstates");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tcpstates: --top needs a terminal on stdout; for a pipe or a file, use --snapshot INTERVAL\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_terminal_that_goes_away_ends_the_tool() {
    let ns = Netns::new();
    let tmux = Tmux::start(80, 24, &top_in(&ns));
    tmux.wait_for(Duration::from_secs(10), "first frame", |s| {
        s.contains("CONNECTIONS")
    });
    let pid = tmux.tool_pid();
    // The window closed: the terminal hangs up under the tool.
    run("tmux", &["kill-session", "-t", &tmux.name]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while running() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !running(),
        "tcpstates {pid} still runs without its terminal"
    );
}
