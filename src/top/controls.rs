//! What the person at --top asked for: sort order, the typed filter, the states shown, pause,
//! help, scrolling; and which connections that leaves, in which order.

use std::cmp::Ordering;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::screen::Row;
use crate::report::endpoint;
use crate::sanitize;
use crate::table::Age;
use crate::tcp_state::TcpState;

/// The columns the connections sort by (`s` cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    State,
    Age,
    Owner,
    Service,
    Remote,
}

impl SortKey {
    const ALL: [SortKey; 5] = [
        SortKey::State,
        SortKey::Age,
        SortKey::Owner,
        SortKey::Service,
        SortKey::Remote,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::State => "state",
            SortKey::Age => "age",
            SortKey::Owner => "owner",
            SortKey::Service => "service",
            SortKey::Remote => "remote",
        }
    }

    fn next(self) -> SortKey {
        let at = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(at + 1) % SortKey::ALL.len()]
    }
}

/// The keys that show or hide a state (or a group of them) in the connections.
pub const STATE_KEYS: [(char, &str, &[TcpState]); 7] = [
    ('l', "LISTEN", &[TcpState::Listen]),
    ('e', "ESTABLISHED", &[TcpState::Established]),
    ('c', "CLOSE_WAIT", &[TcpState::CloseWait]),
    ('t', "TIME_WAIT", &[TcpState::TimeWait]),
    (
        'f',
        "FIN_WAIT1/2",
        &[TcpState::FinWait1, TcpState::FinWait2],
    ),
    (
        'y',
        "SYN_SENT/RECV",
        &[TcpState::SynSent, TcpState::SynRecv],
    ),
    (
        'x',
        "LAST_ACK, CLOSING",
        &[TcpState::LastAck, TcpState::Closing],
    ),
];

/// What a key asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to redraw.
    None,
    /// The view changed: draw again.
    Redraw,
    Quit,
}

/// The view's settings, changed by keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Controls {
    pub sort: SortKey,
    /// Largest (or oldest) first.
    pub descending: bool,
    /// Applied filter (case-insensitive, any column).
    pub filter: String,
    /// Being typed after `/`, not yet applied.
    pub typing: Option<String>,
    /// States hidden from the connections, as a mask of TcpState::mask.
    pub hidden: u32,
    pub paused: bool,
    pub help: bool,
    /// The first connection shown.
    pub scroll: usize,
    /// Rows the table showed in the last frame (for page keys).
    pub page: usize,
}

impl Default for Controls {
    fn default() -> Controls {
        Controls {
            sort: SortKey::State,
            descending: false,
            filter: String::new(),
            typing: None,
            hidden: 0,
            paused: false,
            help: false,
            scroll: 0,
            page: 10,
        }
    }
}

impl Controls {
    /// Applies one key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            return Action::Quit;
        }
        if let Some(typed) = &mut self.typing {
            match key.code {
                KeyCode::Enter => {
                    self.filter = std::mem::take(typed);
                    self.typing = None;
                    self.scroll = 0;
                }
                KeyCode::Esc => self.typing = None,
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char('u') if ctrl => typed.clear(),
                KeyCode::Char(c) if !ctrl => typed.push(c),
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::Redraw
            };
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.filter.is_empty() => return Action::Quit,
            KeyCode::Esc => {
                self.filter.clear();
                self.scroll = 0;
            }
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('/') => self.typing = Some(self.filter.clone()),
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                // Age reads best oldest first; the others A to Z.
                self.descending = self.sort == SortKey::Age;
            }
            KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Char('a') => self.hidden = 0,
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(self.page.max(1)),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(self.page.max(1)),
            KeyCode::Home | KeyCode::Char('g') => self.scroll = 0,
            KeyCode::End | KeyCode::Char('G') => self.scroll = usize::MAX,
            KeyCode::Char(c) => match STATE_KEYS.iter().find(|(k, _, _)| *k == c) {
                Some((_, _, states)) => {
                    self.hidden ^= states.iter().fold(0, |m, s| m | s.mask());
                    self.scroll = 0;
                }
                None => return Action::None,
            },
            _ => return Action::None,
        }
        Action::Redraw
    }

    /// Is this state shown in the connections?
    pub fn shows(&self, state: TcpState) -> bool {
        self.hidden & state.mask() == 0
    }

    /// The indices of `rows` shown, in order.
    pub fn select(&self, rows: &[Row], netns_name: impl Fn(u32) -> Option<String>) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        let mut shown: Vec<usize> = (0..rows.len())
            .filter(|&i| self.shows(rows[i].state))
            .filter(|&i| needle.is_empty() || matches(&rows[i], &needle, &netns_name))
            .collect();
        let by = |a: &Row, b: &Row| -> Ordering {
            match self.sort {
                SortKey::State => state_order(a.state).cmp(&state_order(b.state)),
                SortKey::Age => a.age.map(Age::ns).cmp(&b.age.map(Age::ns)),
                SortKey::Owner => owner_key(a).cmp(&owner_key(b)),
                SortKey::Service => service_key(a).cmp(&service_key(b)),
                SortKey::Remote => (a.remote, a.remote_port).cmp(&(b.remote, b.remote_port)),
            }
        };
        // Ties in the same order every refresh: by the addresses, then the namespace.
        let tie = |a: &Row, b: &Row| {
            (a.local, a.local_port, a.remote, a.remote_port, a.netns).cmp(&(
                b.local,
                b.local_port,
                b.remote,
                b.remote_port,
                b.netns,
            ))
        };
        shown.sort_unstable_by(|&i, &j| {
            let (a, b) = (&rows[i], &rows[j]);
            let order = by(a, b);
            let order = if self.descending {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| tie(a, b))
        });
        shown
    }

    /// Keeps the scroll within `total` rows, `page` of them visible.
    pub fn clamp_scroll(&mut self, total: usize, page: usize) {
        self.page = page;
        self.scroll = self.scroll.min(total.saturating_sub(page));
    }
}

/// The states in the order a person reads a connection's life.
fn state_order(state: TcpState) -> u8 {
    match state {
        TcpState::Listen => 0,
        TcpState::SynSent => 1,
        TcpState::SynRecv | TcpState::NewSynRecv => 2,
        TcpState::Established => 3,
        TcpState::CloseWait => 4,
        TcpState::LastAck => 5,
        TcpState::FinWait1 => 6,
        TcpState::FinWait2 => 7,
        TcpState::Closing => 8,
        TcpState::TimeWait => 9,
        _ => 10,
    }
}

fn owner_key(row: &Row) -> (bool, &[u8], u32) {
    match &row.owner {
        Some(o) => (false, o.comm.as_bytes(), o.pid),
        None => (true, &[], 0),
    }
}

fn service_key(row: &Row) -> (bool, String) {
    match &row.service {
        Some(s) if s.is_named() => (false, s.label()),
        _ => (true, String::new()),
    }
}

/// Does the lower-case `needle` occur in any column of the row as shown?
fn matches(row: &Row, needle: &str, netns_name: &impl Fn(u32) -> Option<String>) -> bool {
    let mut fields = vec![
        row.state.name().to_lowercase(),
        endpoint(row.local, row.local_port),
        endpoint(row.remote, row.remote_port),
    ];
    if let Some(o) = &row.owner {
        fields.push(format!("{}/{}", o.pid, sanitize::escape(o.comm.as_bytes())).to_lowercase());
    }
    if let Some(s) = row.service.as_ref().filter(|s| s.is_named()) {
        fields.push(s.label().to_lowercase());
    }
    if let Some(name) = netns_name(row.netns) {
        fields.push(name.to_lowercase());
    }
    fields.iter().any(|f| f.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::screen::tests::owner;
    use TcpState::*;

    fn press(controls: &mut Controls, keys: &str) -> Action {
        let mut last = Action::None;
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '\x1b' => KeyCode::Esc,
                '\x08' => KeyCode::Backspace,
                c => KeyCode::Char(c),
            };
            last = controls.key(KeyEvent::new(code, KeyModifiers::NONE));
        }
        last
    }

    fn row(state: TcpState, age_s: u64, pid: u32, comm: &str, remote_port: u16) -> Row {
        Row {
            state,
            age: Some(Age::InState(age_s * 1_000_000_000)),
            owner: owner(pid, comm),
            service: None,
            netns: 1,
            local: "127.0.0.1".parse().unwrap(),
            local_port: 8080,
            remote: "127.0.0.1".parse().unwrap(),
            remote_port,
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            row(TimeWait, 5, 1, "nginx", 40001),
            row(CloseWait, 30, 2, "java", 40002),
            row(Listen, 100, 1, "nginx", 0),
            row(Established, 1, 3, "curl", 40003),
        ]
    }

    fn shown(controls: &Controls) -> Vec<u16> {
        let rows = rows();
        controls
            .select(&rows, |_| None)
            .into_iter()
            .map(|i| rows[i].remote_port)
            .collect()
    }

    #[test]
    fn sorts_by_each_column_and_reverses() {
        let mut c = Controls::default();
        assert_eq!(shown(&c), [0, 40003, 40002, 40001]);
        press(&mut c, "s");
        assert_eq!((c.sort, c.descending), (SortKey::Age, true));
        assert_eq!(shown(&c), [0, 40002, 40001, 40003]);
        press(&mut c, "r");
        assert_eq!(shown(&c), [40003, 40001, 40002, 0]);
        press(&mut c, "s");
        assert_eq!(c.sort, SortKey::Owner);
        assert_eq!(shown(&c), [40003, 40002, 0, 40001]);
        press(&mut c, "sss");
        assert_eq!(c.sort, SortKey::State);
    }

    #[test]
    fn a_typed_filter_narrows_and_escape_clears_it() {
        let mut c = Controls::default();
        assert_eq!(press(&mut c, "/NGI"), Action::Redraw);
        // Not applied until Enter.
        assert_eq!(shown(&c).len(), 4);
        assert_eq!(c.typing.as_deref(), Some("NGI"));
        press(&mut c, "\x08inx\n");
        assert_eq!(c.filter, "NGinx");
        assert_eq!(shown(&c), [0, 40001]);
        press(&mut c, "/\x1b");
        assert_eq!(c.filter, "NGinx", "Esc while typing keeps the filter");
        press(&mut c, "\x1b");
        assert_eq!(shown(&c).len(), 4);
        // With no filter, Esc quits; q always does.
        assert_eq!(press(&mut c, "\x1b"), Action::Quit);
        assert_eq!(press(&mut c, "q"), Action::Quit);
        press(&mut c, "/close_w\n");
        assert_eq!(shown(&c), [40002]);
        press(&mut c, "\x1b/:4000\n");
        assert_eq!(shown(&c), [40003, 40002, 40001]);
    }

    #[test]
    fn state_keys_toggle_and_a_shows_all() {
        let mut c = Controls::default();
        press(&mut c, "tl");
        assert_eq!(shown(&c), [40003, 40002]);
        press(&mut c, "t");
        assert_eq!(shown(&c), [40003, 40002, 40001]);
        press(&mut c, "ec");
        assert_eq!(shown(&c), [40001]);
        press(&mut c, "a");
        assert_eq!(shown(&c).len(), 4);
        assert_eq!(press(&mut c, "Z"), Action::None);
    }

    #[test]
    fn pause_help_and_scrolling() {
        let mut c = Controls::default();
        press(&mut c, "p");
        assert!(c.paused);
        press(&mut c, "?");
        assert!(c.help);
        // A key closes the help without acting.
        press(&mut c, "p");
        assert!(!c.help && c.paused);
        assert_eq!(press(&mut c, "?q"), Action::Quit);
        let mut c = Controls::default();
        press(&mut c, "jjjG");
        c.clamp_scroll(100, 10);
        assert_eq!(c.scroll, 90);
        press(&mut c, "kg");
        assert_eq!(c.scroll, 0);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(c.key(ctrl_c), Action::Quit);
    }
}
