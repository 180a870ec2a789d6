//! Draws one --top frame with ratatui: the header, per-state counts with their sparklines, the
//! holders of the closing states, TIME_WAIT by destination, the connections (only the rows that
//! fit are laid out), the latest transitions, the key line, and the help over it all.

use std::collections::HashMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table};
use ratatui::Frame;

use super::controls::{Controls, STATE_KEYS};
use super::screen::{Destination, HolderRow, Row, Screen, Trend};
use crate::event::Owner;
use crate::render::snapshot::short_duration;
use crate::report::endpoint;
use crate::sanitize;
use crate::services::Service;
use crate::table::Age;
use crate::tcp_state::TcpState;

/// Colours, or only bold and reverse (NO_COLOR, a monochrome terminal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    fn state(self, state: TcpState) -> Style {
        if !self.color {
            return Style::default();
        }
        let color = match state {
            TcpState::Established => Color::Green,
            TcpState::CloseWait | TcpState::LastAck => Color::Red,
            TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing => Color::Yellow,
            TcpState::TimeWait => Color::Blue,
            TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv => Color::Cyan,
            TcpState::Listen => Color::Magenta,
            _ => Color::Reset,
        };
        Style::default().fg(color)
    }

    fn warning(self) -> Style {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        if self.color {
            bold.fg(Color::Yellow)
        } else {
            bold.add_modifier(Modifier::REVERSED)
        }
    }

    fn title(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    fn bar(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
}

/// The states the counts panel lists, in the order a person reads them.
const LISTED: [TcpState; 10] = [
    TcpState::Established,
    TcpState::CloseWait,
    TcpState::TimeWait,
    TcpState::FinWait2,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::LastAck,
    TcpState::Closing,
    TcpState::Listen,
];

/// Draws the frame; `shown` are the connections the controls select, in order; `netns_names`
/// names namespaces (ip netns, docker).
pub fn draw(
    frame: &mut Frame<'_>,
    screen: &Screen,
    controls: &mut Controls,
    shown: &[usize],
    netns_names: &HashMap<u32, String>,
    theme: Theme,
) {
    let area = frame.area();
    let tall = area.height >= 36;
    let [header, panels, conns, tail, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if tall { 11 } else { 7 }),
        Constraint::Min(3),
        Constraint::Length(if tall { 9 } else { 4 }),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, screen, controls, theme);
    let left = (u32::from(area.width) * 9 / 20).clamp(30, 60) as u16;
    let [states, right] =
        Layout::horizontal([Constraint::Length(left), Constraint::Min(20)]).areas(panels);
    draw_states(frame, states, screen, theme);
    let [holders, destinations] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    draw_holders(frame, holders, &screen.holders, theme);
    draw_destinations(
        frame,
        destinations,
        &screen.destinations,
        netns_names,
        theme,
    );
    draw_connections(frame, conns, screen, controls, shown, netns_names, theme);
    draw_tail(frame, tail, screen, theme);
    draw_footer(frame, footer, controls, theme);
    if controls.help {
        draw_help(frame, area, theme);
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, screen: &Screen, c: &Controls, theme: Theme) {
    // What must be seen first (the lost events among them), then what fits.
    let h = &screen.header;
    let mut spans = vec![
        Span::styled(format!(" {} ", h.host), theme.title()),
        Span::raw(format!(
            " {} sockets  {:.0} transitions/s  ",
            h.tracked, h.transitions_per_s
        )),
    ];
    let lost = format!("{} lost", h.lost);
    spans.push(if h.lost > 0 {
        Span::styled(lost, theme.warning())
    } else {
        Span::raw(lost)
    });
    if c.paused {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(" PAUSED ", theme.warning()));
    }
    spans.push(Span::raw(format!(
        " | {} | kernel {}",
        h.namespaces, h.kernel
    )));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Draws a panel's first line, its title in bold across the panel; returns the area below it.
fn panel(frame: &mut Frame<'_>, area: Rect, title: String, theme: Theme) -> Rect {
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Span::styled(title, theme.title()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    inner
}

fn draw_states(frame: &mut Frame<'_>, area: Rect, screen: &Screen, theme: Theme) {
    let inner = panel(
        frame,
        area,
        " STATE        SOCKETS  TREND ".to_string(),
        theme,
    );
    // States with sockets now or before come first; quiet ones fill what is left.
    let seen = |s: TcpState| {
        screen.counts[s as usize - 1] > 0
            || screen
                .history
                .get(s as usize - 1)
                .is_some_and(|h| h.iter().any(|&n| n > 0))
    };
    let mut order: Vec<TcpState> = LISTED.iter().copied().filter(|&s| seen(s)).collect();
    order.extend(LISTED.iter().copied().filter(|&s| !seen(s)));
    for (line, state) in order
        .into_iter()
        .take(usize::from(inner.height))
        .enumerate()
    {
        let row = Rect {
            y: inner.y + line as u16,
            height: 1,
            ..inner
        };
        let count = screen.counts[state as usize - 1];
        let [label, spark] =
            Layout::horizontal([Constraint::Length(21), Constraint::Min(1)]).areas(row);
        let text = Line::from(vec![
            Span::styled(format!("{:<12}", state.name()), theme.state(state)),
            Span::raw(format!("{count:>8} ")),
        ]);
        frame.render_widget(Paragraph::new(text), label);
        let history = screen
            .history
            .get(state as usize - 1)
            .map_or(&[][..], |h| h.as_slice());
        let visible = &history[history.len().saturating_sub(usize::from(spark.width))..];
        frame.render_widget(
            Sparkline::default()
                .data(visible)
                .max(visible.iter().copied().max().unwrap_or(0).max(1))
                .style(theme.state(state)),
            spark,
        );
    }
}

/// `PID/comm`, or `none` when no process holds it.
fn owner_text(owner: Option<Owner>, none: &str) -> String {
    owner.map_or_else(
        || none.to_string(),
        |o| format!("{}/{}", o.pid, sanitize::escape(o.comm.as_bytes())),
    )
}

fn service_text(service: Option<&Service>) -> String {
    match service.filter(|s| s.is_named()) {
        Some(s) => sanitize::escape(s.label().as_bytes()).into_owned(),
        None => "-".to_string(),
    }
}

fn age_text(age: Option<Age>) -> String {
    match age {
        Some(Age::InState(ns)) => short_duration(ns),
        Some(Age::Idle(ns)) => format!(">{}", short_duration(ns)),
        None => "-".to_string(),
    }
}

fn draw_holders(frame: &mut Frame<'_>, area: Rect, holders: &[HolderRow], theme: Theme) {
    let inner = panel(
        frame,
        area,
        " HELD IN CLOSE_WAIT, FIN_WAIT2, LAST_ACK ".to_string(),
        theme,
    );
    if holders.is_empty() {
        frame.render_widget(Paragraph::new(" none"), inner);
        return;
    }
    let lines: Vec<Line<'_>> = holders
        .iter()
        .take(usize::from(inner.height))
        .map(|h| {
            let trend = match h.trend {
                Trend::Growing => Span::styled("+", theme.warning()),
                Trend::Steady => Span::raw("="),
                Trend::Shrinking => Span::raw("-"),
            };
            Line::from(vec![
                Span::styled(format!("{:<10}", h.state.name()), theme.state(h.state)),
                Span::raw(format!("{:>6} ", h.count)),
                trend,
                Span::raw(format!(
                    " {:>7}  {}",
                    age_text(h.oldest),
                    owner_text(h.owner, "- (no process)")
                )),
                Span::raw(match h.service.as_deref().filter(|s| s.is_named()) {
                    Some(s) => format!("  {}", service_text(Some(s))),
                    None => String::new(),
                }),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn netns_text(netns: u32, names: &HashMap<u32, String>) -> String {
    match names.get(&netns) {
        Some(name) => sanitize::escape(name.as_bytes()).into_owned(),
        None => netns.to_string(),
    }
}

fn draw_destinations(
    frame: &mut Frame<'_>,
    area: Rect,
    destinations: &[Destination],
    netns_names: &HashMap<u32, String>,
    theme: Theme,
) {
    let inner = panel(
        frame,
        area,
        " TIME_WAIT BY DESTINATION   PORTS IN USE ".to_string(),
        theme,
    );
    if destinations.is_empty() {
        frame.render_widget(Paragraph::new(" none"), inner);
        return;
    }
    // The namespace only matters when there are several.
    let several = destinations
        .iter()
        .any(|d| d.netns != destinations[0].netns);
    let listed = &destinations[..destinations.len().min(usize::from(inner.height))];
    let width = listed
        .iter()
        .map(|d| endpoint(d.remote, d.remote_port).len())
        .max()
        .unwrap_or(0);
    let lines: Vec<Line<'_>> = listed
        .iter()
        .map(|d| {
            let mut spans = vec![Span::raw(format!(
                "{:>6}  {:<width$}",
                d.time_wait,
                endpoint(d.remote, d.remote_port)
            ))];
            if let Some((in_use, range)) = d.ports {
                let percent = f64::from(in_use) * 100.0 / f64::from(range.max(1));
                let text = format!("  {in_use}/{range} ({percent:.1}%)");
                spans.push(if percent > 80.0 {
                    Span::styled(text, theme.warning())
                } else {
                    Span::raw(text)
                });
            }
            if several {
                spans.push(Span::raw(format!(
                    "  netns {}",
                    netns_text(d.netns, netns_names)
                )));
            }
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_connections(
    frame: &mut Frame<'_>,
    area: Rect,
    screen: &Screen,
    controls: &mut Controls,
    shown: &[usize],
    netns_names: &HashMap<u32, String>,
    theme: Theme,
) {
    let order = if controls.descending { "v" } else { "^" };
    let mut title = format!(
        " CONNECTIONS {} of {}, by {} {order}",
        shown.len(),
        screen.rows.len(),
        controls.sort.name()
    );
    if !controls.filter.is_empty() {
        title.push_str(&format!(", matching \"{}\"", controls.filter));
    }
    let hidden: Vec<&str> = STATE_KEYS
        .iter()
        .filter(|(_, _, states)| states.iter().any(|&s| !controls.shows(s)))
        .map(|(_, name, _)| *name)
        .collect();
    if !hidden.is_empty() {
        title.push_str(&format!(", hiding {}", hidden.join(" ")));
    }
    title.push(' ');
    let inner = panel(frame, area, title, theme);
    // One line for the column names; the rest for rows, only those visible laid out.
    let page = usize::from(inner.height.saturating_sub(1));
    controls.clamp_scroll(shown.len(), page);
    let wide = inner.width >= 100;
    let several_ns = screen.rows.iter().any(|r| r.netns != screen.rows[0].netns);
    let mut header = vec!["STATE", "AGE", "OWNER"];
    if wide {
        header.push("SERVICE");
    }
    header.extend(["LOCAL", "REMOTE"]);
    if wide && several_ns {
        header.push("NETNS");
    }
    let rows = shown.iter().skip(controls.scroll).take(page).map(|&i| {
        connection_row(
            &screen.rows[i],
            wide,
            wide && several_ns,
            netns_names,
            theme,
        )
    });
    let mut widths = vec![
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(if wide { 22 } else { 16 }),
    ];
    if wide {
        widths.push(Constraint::Length(24));
    }
    widths.extend([Constraint::Fill(1), Constraint::Fill(1)]);
    if wide && several_ns {
        widths.push(Constraint::Length(12));
    }
    let table = Table::new(rows, widths)
        .header(TableRow::new(header).style(theme.title()))
        .column_spacing(1);
    frame.render_widget(table, inner);
}

fn connection_row(
    row: &Row,
    service: bool,
    netns: bool,
    netns_names: &HashMap<u32, String>,
    theme: Theme,
) -> TableRow<'static> {
    let mut cells = vec![
        Cell::from(Span::styled(row.state.name(), theme.state(row.state))),
        Cell::from(age_text(row.age)),
        Cell::from(owner_text(row.owner, "-")),
    ];
    if service {
        cells.push(Cell::from(service_text(row.service.as_deref())));
    }
    let remote = if row.state == TcpState::Listen {
        "*".to_string()
    } else {
        endpoint(row.remote, row.remote_port)
    };
    cells.extend([
        Cell::from(endpoint(row.local, row.local_port)),
        Cell::from(remote),
    ]);
    if netns {
        cells.push(Cell::from(netns_text(row.netns, netns_names)));
    }
    TableRow::new(cells)
}

fn draw_tail(frame: &mut Frame<'_>, area: Rect, screen: &Screen, theme: Theme) {
    let inner = panel(frame, area, " LATEST TRANSITIONS ".to_string(), theme);
    let fits = usize::from(inner.height);
    let lines: Vec<Line<'_>> = screen.tail[screen.tail.len().saturating_sub(fits)..]
        .iter()
        .map(|(time, t)| {
            // Loopback handshakes take microseconds: below a millisecond in µs, below a second
            // in ms to a tenth.
            let ms = t
                .micros_in_old_state()
                .map_or(String::new(), |us| match us {
                    0..1_000 => format!(" {us}µs"),
                    1_000..1_000_000 => format!(" {:.1}ms", us as f64 / 1000.0),
                    _ => format!(" {}", short_duration(us * 1000)),
                });
            Line::from(vec![
                Span::raw(format!(
                    "{time} {:<16} {} > {} ",
                    owner_text(t.owner, "-"),
                    endpoint(t.local, t.local_port),
                    endpoint(t.remote, t.remote_port)
                )),
                Span::styled(t.old.name(), theme.state(t.old)),
                Span::raw(" -> "),
                Span::styled(t.new.name(), theme.state(t.new)),
                Span::raw(ms),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, c: &Controls, theme: Theme) {
    let line = match &c.typing {
        Some(typed) => Line::from(vec![
            Span::styled(" Filter: ", theme.bar()),
            Span::raw(format!("{typed}_  (Enter to apply, Esc to cancel)")),
        ]),
        None => Line::from(vec![
            Span::styled(" q", theme.bar()),
            Span::raw(" quit "),
            Span::styled(" ?", theme.bar()),
            Span::raw(" help "),
            Span::styled(" /", theme.bar()),
            Span::raw(" filter "),
            Span::styled(" s", theme.bar()),
            Span::raw(" sort "),
            Span::styled(" p", theme.bar()),
            Span::raw(if c.paused { " resume " } else { " pause " }),
            Span::styled(" l e c t f y x", theme.bar()),
            Span::raw(" states"),
        ]),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The keys, over the middle of the screen.
const HELP: &[(&str, &str)] = &[
    ("q  Esc  Ctrl-C", "quit (Esc first clears a filter)"),
    ("?  h  F1", "this help (any key closes it)"),
    ("/", "filter: type, Enter applies, Esc cancels"),
    ("s", "sort by state, age, owner, service, remote"),
    ("r", "reverse the order"),
    ("p  Space", "pause and resume the refreshes"),
    (
        "l e c t",
        "show/hide LISTEN ESTABLISHED CLOSE_WAIT TIME_WAIT",
    ),
    ("f y x", "show/hide FIN_WAIT*, SYN_*, LAST_ACK+CLOSING"),
    ("a", "show every state"),
    ("Up Down j k", "scroll one row"),
    ("PgUp PgDn", "scroll one page"),
    ("Home End g G", "first or last row"),
    (
        "AGE >5.0s",
        "there before tcpstates started: idle that long",
    ),
];

fn draw_help(frame: &mut Frame<'_>, area: Rect, theme: Theme) {
    let width = 68.min(area.width);
    let height = (HELP.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines = vec![Line::raw("")];
    lines.extend(HELP.iter().map(|(keys, what)| {
        Line::from(vec![
            Span::styled(format!(" {keys:<15}"), theme.title()),
            Span::raw(*what),
        ])
    }));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(" tcpstates --top: keys ", theme.title())),
        ),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortUse;
    use crate::table::tests::transition;
    use crate::top::screen::tests::table;
    use crate::top::screen::{Header, Memory};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use std::path::Path;

    fn screen(lost: u64) -> Screen {
        let table = table();
        let header = Header {
            host: "web-1".to_string(),
            kernel: "6.1.0-57-cloud-amd64".to_string(),
            namespaces: "every network namespace (3 now)".to_string(),
            tracked: table.len(),
            transitions_per_s: 12.4,
            lost,
        };
        let pressure = [PortUse {
            netns: 1,
            local: "127.0.0.1".parse().unwrap(),
            remote: "10.0.0.1".parse().unwrap(),
            remote_port: 443,
            in_use: 3,
            range: 28232,
        }];
        let mut to_tw = transition(9, TcpState::FinWait2, TcpState::TimeWait, 4_000_000_000);
        to_tw.old_since_ns = Some(3_998_500_000);
        let tail = vec![
            (
                "12:00:01".to_string(),
                transition(9, TcpState::FinWait1, TcpState::FinWait2, 3_998_500_000),
            ),
            ("12:00:02".to_string(), to_tw),
        ];
        let mut memory = Memory::default();
        // Two refreshes: some history for the sparklines.
        memory.screen(
            header.clone(),
            table.conns(),
            &pressure,
            Vec::new(),
            4_000_000_000,
        );
        memory.screen(header, table.conns(), &pressure, tail, 5_000_000_000)
    }

    fn render(
        width: u16,
        height: u16,
        screen: &Screen,
        controls: &mut Controls,
        theme: Theme,
    ) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let shown = controls.select(&screen.rows, |_| None);
        let names = HashMap::from([(1, "blue".to_string())]);
        terminal
            .draw(|frame| draw(frame, screen, controls, &shown, &names, theme))
            .unwrap();
        terminal
    }

    fn text(terminal: &Terminal<TestBackend>) -> String {
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Compares with src/top/golden/NAME.txt; `UPDATE_GENERATED=1 cargo test top` rewrites it.
    fn golden(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/top/golden")
            .join(format!("{name}.txt"));
        if std::env::var_os("UPDATE_GENERATED").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "{name} differs from {}:\n{actual}",
            path.display()
        );
    }

    const COLOR: Theme = Theme { color: true };

    #[test]
    fn every_panel_fits_80x24() {
        let t = render(80, 24, &screen(0), &mut Controls::default(), COLOR);
        golden("80x24", &text(&t));
    }

    #[test]
    fn a_large_terminal_shows_more_of_each_panel_and_the_service_column() {
        let t = render(160, 45, &screen(0), &mut Controls::default(), COLOR);
        golden("160x45", &text(&t));
    }

    #[test]
    fn the_help_lists_the_keys_over_the_view() {
        let mut controls = Controls {
            help: true,
            ..Controls::default()
        };
        let t = render(80, 24, &screen(0), &mut controls, COLOR);
        golden("help-80x24", &text(&t));
    }

    #[test]
    fn a_filter_being_typed_shows_at_the_bottom_and_applied_in_the_title() {
        let mut controls = Controls::default();
        for c in "/leaky\nt/80".chars() {
            let code = if c == '\n' {
                KeyCode::Enter
            } else {
                KeyCode::Char(c)
            };
            controls.key(KeyEvent::new(code, KeyModifiers::NONE));
        }
        let out = text(&render(80, 24, &screen(0), &mut controls, COLOR));
        let lines: Vec<&str> = out.lines().collect();
        // Typing after / edits the filter in place.
        assert_eq!(
            lines[23],
            " Filter: leaky80_  (Enter to apply, Esc to cancel)"
        );
        assert!(
            lines[8].starts_with(
                " CONNECTIONS 3 of 8, by state ^, matching \"leaky\", hiding TIME_WAIT"
            ),
            "{}",
            lines[8]
        );
    }

    #[test]
    fn lost_events_and_pause_are_in_the_warning_style_with_or_without_colour() {
        let mut controls = Controls {
            paused: true,
            ..Controls::default()
        };
        for (theme, fg, modifier) in [
            (COLOR, Color::Yellow, Modifier::BOLD),
            (
                Theme { color: false },
                Color::Reset,
                Modifier::BOLD | Modifier::REVERSED,
            ),
        ] {
            let t = render(80, 24, &screen(7), &mut controls, theme);
            let line = text(&t).lines().next().unwrap().to_string();
            assert!(
                line.starts_with(" web-1  8 sockets  12 transitions/s  7 lost  PAUSED  | "),
                "{line}"
            );
            let buffer = t.backend().buffer();
            for word in ["7 lost", "PAUSED"] {
                let cell = &buffer[(line.find(word).unwrap() as u16, 0)];
                assert_eq!((cell.fg, cell.modifier), (fg, modifier), "{word}");
            }
            if !theme.color {
                // Nothing coloured anywhere.
                assert!(buffer.content().iter().all(|c| c.fg == Color::Reset));
            }
        }
    }

    #[test]
    fn any_terminal_size_draws_without_a_panic() {
        for (width, height) in [(0, 0), (1, 1), (10, 5), (29, 12), (80, 3), (300, 100)] {
            for help in [false, true] {
                let mut controls = Controls {
                    help,
                    ..Controls::default()
                };
                render(width, height, &screen(3), &mut controls, COLOR);
            }
        }
    }

    #[test]
    fn only_the_visible_rows_are_laid_out_and_scrolling_stays_in_range() {
        let mut controls = Controls {
            scroll: usize::MAX,
            ..Controls::default()
        };
        render(80, 24, &screen(0), &mut controls, COLOR);
        // 8 connections, 9 rows fit: the scroll comes back to the first.
        assert_eq!((controls.page, controls.scroll), (9, 0));
        // 5 rows fit: the last 5 of 8.
        controls.scroll = usize::MAX;
        let out = text(&render(80, 20, &screen(0), &mut controls, COLOR));
        assert_eq!((controls.page, controls.scroll), (5, 3));
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[10].starts_with("CLOSE_WAIT  >6.0s   300/leaky"),
            "{out}"
        );
        assert!(lines[14].starts_with("TIME_WAIT   >10.0s"), "{out}");
    }
}
