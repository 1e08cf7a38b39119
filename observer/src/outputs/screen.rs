//! The live terminal screen (ratatui + crossterm), used when stdout is a terminal:
//! what the probes cost in the title, scheduler state with a bar per P, the
//! run-queue latency histograms (the probes' and the runtime's own), who held
//! the Ps while goroutines waited (sampled and exact) and the run-slice one, wait reasons, the goroutine census (by state, by wait reason,
//! the longest waiters), the busiest goroutines and a scrolling preemption log,
//! redrawn every interval. Keys: `q` quits, `p` pauses, arrow keys scroll the log.
//!
//! The terminal is restored when the screen is dropped (any return, any error)
//! and by ratatui's panic hook on a panic.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use crossterm::event::{self, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::{
    DefaultTerminal, Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table, TableState},
};

use crate::{
    outputs::{
        Report,
        format::{Header, by_power_of_two, by_value_descending, duration, p99_or_dash},
    },
    stats::{
        aggregate::{Bucket, Stats},
        census::Census,
        cost::ProbeCost,
        cpu_samples::CpuView,
        runtime_activity::RuntimeActivity,
        sched::SchedState,
    },
};

/// Preemption lines kept for scrolling back.
const LOG_LINES: usize = 2000;

pub enum Key {
    Quit,
    Nothing,
}

/// What the screen shows of one process: the last interval, the whole run,
/// the scheduler state, the preemption log. `--all` keeps one per process.
#[derive(Clone)]
pub struct ProcessScreen {
    header: Header,
    /// The last interval, the whole run, and the scheduler state.
    interval: Stats,
    interval_ns: u64,
    totals: Stats,
    sched: Option<SchedState>,
    /// Why there is no scheduler state, if there is none.
    sched_note: Option<String>,
    /// What the probes cost over the last interval.
    cost: Option<ProbeCost>,
    /// The runtime's own counters over the last interval.
    runtime: Option<RuntimeActivity>,
    /// The last census, taken every `census_every` intervals.
    census: Option<Census>,
    census_every: u64,
    /// The CPU samples of the last interval (who held the Ps).
    cpu: Option<CpuView>,
    log: VecDeque<String>,
    /// Lines scrolled back from the newest.
    scroll: usize,
    paused: bool,
    elapsed_ns: u64,
    /// The process is gone (or no longer watched): its last numbers stay.
    pub ended: bool,
}

impl ProcessScreen {
    pub fn new(header: Header, sched_note: Option<String>) -> Self {
        Self {
            header,
            interval: Stats::default(),
            interval_ns: 0,
            totals: Stats::default(),
            sched: None,
            sched_note,
            cost: None,
            runtime: None,
            census: None,
            census_every: 1,
            cpu: None,
            log: VecDeque::new(),
            scroll: 0,
            paused: false,
            elapsed_ns: 0,
            ended: false,
        }
    }

    /// New numbers; kept off the screen while paused.
    pub fn update(&mut self, report: &Report<'_>) {
        if self.paused {
            return;
        }
        self.interval = report.stats.clone();
        self.interval_ns = report.interval_ns;
        self.totals = report.totals.clone();
        self.sched = report.sched.cloned();
        self.elapsed_ns = report.elapsed_ns;
        self.cost = Some(report.cost.clone());
        self.runtime = report.runtime.cloned();
        // Between two censuses, the last one stays on the screen.
        if let Some(census) = report.census {
            self.census = Some(census.clone());
        }
        self.census_every = report.census_every;
        self.cpu = report.cpu.cloned();
    }

    /// The scheduler state before the first interval.
    pub fn first_state(&mut self, sched: Option<SchedState>) {
        self.sched = sched;
    }

    pub fn preemption(&mut self, line: String) {
        self.log.push_back(line);
        if self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }

    /// The keys of the process's screen: pause, scroll the log.
    fn key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Up => self.scroll = (self.scroll + 1).min(self.log.len()),
            KeyCode::Down => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageUp => self.scroll = (self.scroll + 10).min(self.log.len()),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            _ => {}
        }
    }

    fn view(&self, keys: &'static str) -> View<'_> {
        View {
            header: &self.header,
            interval: &self.interval,
            interval_ns: self.interval_ns,
            totals: &self.totals,
            sched: self.sched.as_ref(),
            sched_note: self.sched_note.as_deref(),
            cost: self.cost.as_ref(),
            runtime: self.runtime.as_ref(),
            census: self.census.as_ref(),
            census_every: self.census_every,
            cpu: self.cpu.as_ref(),
            log: &self.log,
            scroll: self.scroll,
            paused: self.paused,
            elapsed_ns: self.elapsed_ns,
            keys,
        }
    }
}

/// The key pressed on a screen, for the session.
fn pressed() -> Result<Option<(KeyCode, KeyModifiers)>> {
    while event::poll(Duration::ZERO)? {
        if let event::Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
        {
            return Ok(Some((key.code, key.modifiers)));
        }
    }
    Ok(None)
}

/// `q`, Esc, or Ctrl-C (raw mode turns it into a key instead of SIGINT).
fn quits(code: KeyCode, modifiers: KeyModifiers) -> bool {
    matches!(code, KeyCode::Char('q') | KeyCode::Esc)
        || (code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL))
}

/// The screen of one process (`attach --pid`).
pub struct Tui {
    terminal: DefaultTerminal,
    pub screen: ProcessScreen,
    /// Whether the terminal was cleared: the session's messages printed after
    /// the screen started (attached, …) stay where the first frame is blank.
    cleared: bool,
}

impl Tui {
    pub fn start(header: Header, sched_note: Option<String>) -> Result<Self> {
        let terminal = ratatui::try_init().context("cannot set up the terminal screen")?;
        Ok(Self {
            terminal,
            screen: ProcessScreen::new(header, sched_note),
            cleared: false,
        })
    }

    /// Handles the keys pressed since the last call, without waiting.
    pub fn keys(&mut self) -> Result<Key> {
        while let Some((code, modifiers)) = pressed()? {
            if quits(code, modifiers) {
                return Ok(Key::Quit);
            }
            self.screen.key(code);
        }
        Ok(Key::Nothing)
    }

    pub fn draw(&mut self) -> Result<()> {
        if !self.cleared {
            self.terminal.clear()?;
            self.cleared = true;
        }
        let view = self.screen.view("q quit · p pause · ↑↓ scroll");
        self.terminal.draw(|frame| view.render(frame))?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The screens of many processes (`--all`), by pid: each session updates its
/// own; the node's screen shows the list, or one of them.
pub type SharedScreens = Arc<Mutex<BTreeMap<u32, ProcessScreen>>>;

/// The screen of `--all`: a process list (pid, command, Go version,
/// container, goroutines, run-queue p99, CPU, probe cost); Enter opens the
/// screen of the selected one, Esc goes back.
pub struct NodeTui {
    terminal: DefaultTerminal,
    screens: SharedScreens,
    /// The row the cursor is on, and the process opened (None: the list).
    cursor: usize,
    opened: Option<u32>,
    /// What the sessions said (their stderr while the screen is up).
    messages: Arc<Mutex<VecDeque<String>>>,
}

impl NodeTui {
    pub fn start(screens: SharedScreens, messages: Arc<Mutex<VecDeque<String>>>) -> Result<Self> {
        let mut terminal = ratatui::try_init().context("cannot set up the terminal screen")?;
        terminal.clear()?;
        Ok(Self {
            terminal,
            screens,
            cursor: 0,
            opened: None,
            messages,
        })
    }

    /// Handles the keys pressed since the last call, without waiting.
    pub fn keys(&mut self) -> Result<Key> {
        while let Some((code, modifiers)) = pressed()? {
            let mut screens = self.screens.lock().unwrap_or_else(|e| e.into_inner());
            match self.opened {
                // Esc and Backspace go back to the list.
                Some(_) if matches!(code, KeyCode::Esc | KeyCode::Backspace | KeyCode::Left) => {
                    self.opened = None;
                }
                Some(pid) if !quits(code, modifiers) => {
                    if let Some(screen) = screens.get_mut(&pid) {
                        screen.key(code);
                    }
                }
                _ if quits(code, modifiers) => return Ok(Key::Quit),
                None => match code {
                    KeyCode::Up => self.cursor = self.cursor.saturating_sub(1),
                    KeyCode::Down => self.cursor = (self.cursor + 1).min(screens.len().max(1) - 1),
                    KeyCode::Enter | KeyCode::Right => {
                        self.opened = screens.keys().nth(self.cursor).copied();
                    }
                    _ => {}
                },
                Some(_) => {}
            }
        }
        Ok(Key::Nothing)
    }

    pub fn draw(&mut self) -> Result<()> {
        let screens = self.screens.lock().unwrap_or_else(|e| e.into_inner());
        let messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        let opened = self.opened.and_then(|pid| screens.get(&pid));
        let cursor = self.cursor.min(screens.len().saturating_sub(1));
        self.terminal.draw(|frame| match opened {
            Some(screen) => screen
                .view("Esc back to the list · q quit · p pause · ↑↓ scroll")
                .render(frame),
            None => render_list(frame, &screens, cursor, &messages),
        })?;
        Ok(())
    }
}

impl Drop for NodeTui {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The process list, and the messages of the sessions under it.
fn render_list(
    frame: &mut Frame,
    screens: &BTreeMap<u32, ProcessScreen>,
    cursor: usize,
    messages: &VecDeque<String>,
) {
    let [title, list, log] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(8),
    ])
    .areas(frame.area());
    let ended = screens.values().filter(|s| s.ended).count();
    frame.render_widget(
        Paragraph::new(format!(
            " gobpf-sched — {} processes watched, {ended} ended   ↑↓ select · Enter open · q quit",
            screens.len() - ended
        ))
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        title,
    );
    let header = Row::new([
        "PID",
        "COMMAND",
        "GO",
        "CONTAINER",
        "GOROUTINES",
        "RUNQ P99",
        "CPU",
        "PROBES",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = screens.values().map(|screen| {
        let labels = &screen.header.labels;
        let cpu = screen.cpu.as_ref().map_or("-".to_owned(), |cpu| {
            let busy = cpu.samples as f64 * cpu.period_ns as f64;
            percent(busy / screen.interval_ns.max(1) as f64)
        });
        let cells = [
            screen.header.pid.to_string(),
            labels.comm.clone(),
            screen.header.go_version.clone(),
            labels
                .container_id
                .as_deref()
                .map_or("-".to_owned(), |id| id[..id.len().min(12)].to_owned()),
            screen
                .census
                .as_ref()
                .map_or("-".to_owned(), |c| c.goroutines.to_string()),
            p99_or_dash(&screen.interval.runq_latency_histogram),
            cpu,
            if screen.ended {
                "ended".to_owned()
            } else {
                screen.cost.as_ref().map_or("-".to_owned(), cost_text)
            },
        ];
        let style = if screen.ended {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        };
        Row::new(cells).style(style)
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(13),
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    // The list scrolls to keep the cursor's row in sight.
    let mut state = TableState::default().with_selected(Some(cursor));
    frame.render_stateful_widget(
        Table::new(rows, widths)
            .header(header)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::bordered().title(" Go processes ")),
        list,
        &mut state,
    );
    let height = log.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = messages
        .iter()
        .skip(messages.len().saturating_sub(height))
        .map(|l| Line::from(l.as_str()))
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" messages ")),
        log,
    );
}

struct View<'a> {
    header: &'a Header,
    interval: &'a Stats,
    interval_ns: u64,
    totals: &'a Stats,
    sched: Option<&'a SchedState>,
    sched_note: Option<&'a str>,
    cost: Option<&'a ProbeCost>,
    runtime: Option<&'a RuntimeActivity>,
    census: Option<&'a Census>,
    census_every: u64,
    cpu: Option<&'a CpuView>,
    log: &'a VecDeque<String>,
    scroll: usize,
    paused: bool,
    elapsed_ns: u64,
    /// What the keys do, for the title.
    keys: &'static str,
}

impl View<'_> {
    fn render(&self, frame: &mut Frame) {
        let [title, top, middle, bottom, log] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(11),
            Constraint::Length(12),
            Constraint::Min(6),
            Constraint::Length(8),
        ])
        .areas(frame.area());
        self.title(frame, title);
        let [state, bars] =
            Layout::horizontal([Constraint::Length(46), Constraint::Min(20)]).areas(top);
        self.scheduler(frame, state);
        self.run_queue_bars(frame, bars);
        let [latency, runtime_latency, blame, slices] =
            Layout::horizontal([Constraint::Fill(1); 4]).areas(middle);
        histogram(
            frame,
            latency,
            &format!("run-queue latency, probes{}", self.probes_span()),
            &self.interval.runq_latency_histogram,
        );
        self.runtime_latency(frame, runtime_latency);
        self.blame(frame, blame);
        histogram(
            frame,
            slices,
            &format!("on-CPU slice length{}", self.probes_span()),
            &self.interval.run_slice_histogram,
        );
        // The busiest goroutines get the wider part: their start functions.
        let [reasons, census, goroutines] = Layout::horizontal([
            Constraint::Length(52),
            Constraint::Fill(4),
            Constraint::Fill(5),
        ])
        .areas(bottom);
        self.wait_reasons(frame, reasons);
        self.census(frame, census);
        self.top_goroutines(frame, goroutines);
        self.preemption_log(frame, log);
    }

    fn title(&self, frame: &mut Frame, area: Rect) {
        let mut text = format!(
            " gobpf-sched — pid {} {} — {} attached — dropped {}",
            self.header.pid,
            self.header.go_version,
            duration(self.elapsed_ns),
            self.totals.dropped
        );
        if let Some(cost) = self.cost {
            text.push_str(&format!(" — {}", cost_text(cost)));
        }
        if self.paused {
            text.push_str(" — PAUSED");
        }
        text.push_str("   ");
        text.push_str(self.keys);
        frame.render_widget(
            Paragraph::new(text).style(Style::new().add_modifier(Modifier::REVERSED)),
            area,
        );
    }

    fn scheduler(&self, frame: &mut Frame, area: Rect) {
        let s = self.interval;
        let mut lines = Vec::new();
        match self.sched {
            Some(state) => {
                lines.push(format!("GOMAXPROCS    {:>6}", state.gomaxprocs));
                lines.push(format!("idle Ps       {:>6}", state.idle_procs));
                lines.push(format!(
                    "threads (Ms)  {:>6}  spinning {}  idle {}",
                    state.threads, state.spinning_threads, state.idle_threads
                ));
                lines.push(format!("global runq   {:>6}", state.global_runq));
                lines.push(format!(
                    "runnable      {:>6}{}",
                    state.runnable(),
                    if state.approximate {
                        "  (approximate)"
                    } else {
                        ""
                    }
                ));
            }
            None => lines.push(format!(
                "scheduler state: {}",
                self.sched_note.unwrap_or("not read yet")
            )),
        }
        lines.push(format!(
            "goroutines    {:>6} created  {} exited",
            s.goroutines_created, s.goroutines_exited
        ));
        lines.push(format!(
            "run slices    {:>6}  parks {}  syscalls {}",
            s.run_slices, s.gopark_total, s.syscalls
        ));
        lines.push(format!(
            "preemptions   {:>6}  (total {})  stack checks {}",
            s.preemptions, self.totals.preemptions, s.cooperative_preemptions
        ));
        lines.push(format!(
            "SIGURG        {:>6}  found nothing {}  GC stops {}",
            s.sigurg_signals, s.signals_without_effect, s.gc_suspensions
        ));
        let title = format!(
            " scheduler — last {}{} ",
            duration(self.interval_ns),
            self.coverage_note().unwrap_or_default()
        );
        frame.render_widget(
            Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
                .block(Block::bordered().title(title)),
            area,
        );
    }

    fn run_queue_bars(&self, frame: &mut Frame, area: Rect) {
        let block = Block::bordered().title(" local run queues (runnext included) ");
        let Some(state) = self.sched else {
            frame.render_widget(Paragraph::new("").block(block), area);
            return;
        };
        let mut bars: Vec<Bar> = state
            .procs
            .iter()
            .map(|p| {
                let value = u64::from(p.queued());
                Bar::default()
                    .value(value)
                    .label(Line::from(format!("P{}", p.id)))
                    .text_value(format!("{value}"))
                    .style(match p.status {
                        "idle" => Style::new().fg(Color::DarkGray),
                        _ => Style::new().fg(Color::Cyan),
                    })
            })
            .collect();
        bars.push(
            Bar::default()
                .value(u64::from(state.global_runq))
                .label(Line::from("global"))
                .text_value(format!("{}", state.global_runq))
                .style(Style::new().fg(Color::Yellow)),
        );
        frame.render_widget(
            BarChart::default()
                .block(block)
                .bar_width(6)
                .bar_gap(1)
                .data(BarGroup::default().bars(&bars)),
            area,
        );
    }

    /// What the probes' numbers of the last interval cover, when not all of it.
    fn coverage_note(&self) -> Option<String> {
        match self.cost {
            Some(cost) if cost.coverage <= 0.0 => Some(" (probes off)".to_owned()),
            Some(cost) if !cost.exact() => Some(format!(" (probes on {})", percent(cost.coverage))),
            _ => None,
        }
    }

    /// The span the probes' histograms cover.
    fn probes_span(&self) -> String {
        self.coverage_note()
            .unwrap_or_else(|| " (last interval)".to_owned())
    }

    /// The run-queue latency the runtime sampled itself: there whether the
    /// probes were on or not.
    fn runtime_latency(&self, frame: &mut Frame, area: Rect) {
        let title = "run-queue latency, Go runtime (~1 in 8 sampled)";
        match self.runtime.map(|r| (r, &r.run_queue_latency)) {
            Some((_, Some(latency))) => {
                histogram(frame, area, title, &by_power_of_two(&latency.buckets));
            }
            Some((r, None)) => {
                let why = r
                    .not_kept
                    .get("run_queue_latency")
                    .map_or("not kept by this Go version", String::as_str);
                frame.render_widget(
                    Paragraph::new(why).block(Block::bordered().title(format!(" {title} "))),
                    area,
                );
            }
            None => frame.render_widget(
                Paragraph::new(self.sched_note.unwrap_or("not read yet"))
                    .block(Block::bordered().title(format!(" {title} "))),
                area,
            ),
        }
    }

    /// While goroutines waited to run, who held the Ps: from the CPU samples,
    /// and exactly from the transitions the probes saw.
    fn blame(&self, frame: &mut Frame, area: Rect) {
        let title = " who held the Ps while goroutines waited ";
        let Some(cpu) = self.cpu else {
            frame.render_widget(
                Paragraph::new("no CPU samples (--sample-hz 0)")
                    .block(Block::bordered().title(title)),
                area,
            );
            return;
        };
        let share_line = |name: &str, share: f64| {
            Line::from(vec![
                Span::styled(format!("{:>4} ", percent(share)), Style::new().bold()),
                Span::raw(name.to_owned()),
            ])
        };
        let mut lines = Vec::new();
        // Who held the CPU at all, for comparison.
        let holders: Vec<String> = cpu
            .by_start_function
            .iter()
            .take(2)
            .map(|s| format!("{} {}", s.name, percent(s.share)))
            .collect();
        lines.push(Line::from(format!(
            "CPU: {}; GC {}",
            if holders.is_empty() {
                "-".to_owned()
            } else {
                holders.join(", ")
            },
            percent(cpu.gc_share)
        )));
        let blame = &cpu.blame;
        if blame.samples == 0 {
            lines.push(Line::from(format!(
                "sampled: no goroutine waited ({} samples)",
                cpu.samples
            )));
        } else {
            lines.push(Line::from(format!(
                "sampled: {} samples, {:.1} waiting",
                blame.samples, blame.mean_waiting
            )));
            for share in blame.by_start_function.iter().take(4) {
                lines.push(share_line(&share.name, share.share));
            }
        }
        if let Some(exact) = &blame.exact {
            lines.push(Line::from(format!(
                "exact: {} waits, {}",
                exact.waits,
                duration(exact.waited_ns)
            )));
            for share in exact.by_start_function.iter().take(3) {
                lines.push(share_line(&share.name, share.share));
            }
        }
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(title)),
            area,
        );
    }

    /// The goroutine census: the program's goroutines by state and the waiting
    /// ones by wait reason side by side, then the longest waiters.
    fn census(&self, frame: &mut Frame, area: Rect) {
        let Some(census) = self.census else {
            frame.render_widget(
                Paragraph::new("no census yet").block(Block::bordered().title(" goroutines ")),
                area,
            );
            return;
        };
        let mut title = format!(
            " goroutines: {} of the program, {} of the runtime",
            census.user_goroutines, census.system_goroutines
        );
        if self.census_every > 1 {
            title.push_str(&format!(" — every {} intervals", self.census_every));
        }
        if census.approximate {
            title.push_str(" (approximate)");
        }
        title.push(' ');
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let states = by_value_descending(&census.by_status);
        let reasons = by_value_descending(&census.by_wait_reason);
        // Room for the longest waiters: the counts take at most half.
        let counts_rows = states.len().max(reasons.len()).max(1);
        let counts_height = (counts_rows as u16 + 1).min(inner.height / 2).max(2);
        let [counts, waiters] =
            Layout::vertical([Constraint::Length(counts_height), Constraint::Min(2)]).areas(inner);
        let cell = |entry: Option<&(&String, u64)>| match entry {
            Some((name, count)) => [(*name).clone(), count.to_string()],
            None => [String::new(), String::new()],
        };
        let rows = (0..counts_rows).map(|i| {
            let [state, in_state] = cell(states.get(i));
            let [reason, waiting] = cell(reasons.get(i));
            Row::new(vec![state, in_state, reason, waiting])
        });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Length(12),
                    Constraint::Length(6),
                    Constraint::Min(16),
                    Constraint::Length(6),
                ],
            )
            .header(Row::new(vec!["STATE", "NOW", "WAIT REASON", "NOW"]).bold()),
            counts,
        );
        let rows = census.longest_waiters.iter().map(|w| {
            Row::new(vec![
                w.goid.to_string(),
                duration(w.waiting_ns),
                w.reason.clone(),
                w.start_function.clone().unwrap_or_else(|| "?".to_owned()),
            ])
        });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Length(8),
                    Constraint::Length(9),
                    Constraint::Length(20),
                    Constraint::Min(10),
                ],
            )
            .header(Row::new(vec!["GOID", "WAITING ≥", "REASON", "STARTED AS"]).bold()),
            waiters,
        );
    }

    fn wait_reasons(&self, frame: &mut Frame, area: Rect) {
        let rows = by_value_descending(&self.totals.gopark)
            .into_iter()
            .map(|(name, total)| {
                Row::new(vec![
                    name.clone(),
                    self.interval
                        .gopark
                        .get(name)
                        .copied()
                        .unwrap_or(0)
                        .to_string(),
                    total.to_string(),
                    duration(self.totals.blocked_ns.get(name).copied().unwrap_or(0)),
                ])
            });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Length(22),
                    Constraint::Length(7),
                    Constraint::Length(8),
                    Constraint::Length(10),
                ],
            )
            .header(Row::new(vec!["wait reason", "last", "total", "blocked"]).bold())
            .block(Block::bordered().title(" parks by reason ")),
            area,
        );
    }

    fn top_goroutines(&self, frame: &mut Frame, area: Rect) {
        let rows = self.interval.top_goroutines.iter().map(|row| {
            let g = &row.totals;
            Row::new(vec![
                row.goid.to_string(),
                duration(g.run_ns),
                p99_or_dash(&row.runq_latency_histogram),
                g.parks.to_string(),
                g.preemptions.to_string(),
                row.start_function.clone().unwrap_or_else(|| "?".to_owned()),
            ])
        });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Length(8),
                    Constraint::Length(10),
                    Constraint::Length(10),
                    Constraint::Length(6),
                    Constraint::Length(8),
                    Constraint::Min(10),
                ],
            )
            .header(
                Row::new(vec![
                    "GOID",
                    "RUN",
                    "RUNQ P99<",
                    "PARKS",
                    "PREEMPTS",
                    "STARTED AS",
                ])
                .bold(),
            )
            .block(Block::bordered().title(" busiest goroutines (last interval) ")),
            area,
        );
    }

    fn preemption_log(&self, frame: &mut Frame, area: Rect) {
        let height = area.height.saturating_sub(2) as usize;
        let end = self.log.len().saturating_sub(self.scroll);
        let start = end.saturating_sub(height);
        let lines: Vec<Line> = self
            .log
            .range(start..end)
            .map(|l| Line::from(l.as_str()))
            .collect();
        let title = if self.scroll > 0 {
            format!(" preemptions (SIGURG) — {} lines back ", self.scroll)
        } else {
            " preemptions (SIGURG) ".to_owned()
        };
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(title)),
            area,
        );
    }
}

/// The probes' coverage and cost against the budget, for the title:
/// "probes 12% of the time · ≈0.9% CPU (budget 1%)".
fn cost_text(cost: &ProbeCost) -> String {
    let on = match cost.mode {
        "exact" => "probes always on (--exact)".to_owned(),
        _ => format!("probes {} of the time", percent(cost.coverage)),
    };
    let overhead = cost.estimated_overhead.map_or_else(
        || "CPU cost -".to_owned(),
        |o| format!("≈{} CPU", percent(o)),
    );
    let budget = cost
        .budget
        .map(|b| format!(" (budget {})", percent(b)))
        .unwrap_or_default();
    format!("{on} · {overhead}{budget}")
}

/// A share as a percentage with the digits that matter: 12%, 0.9%, 0.05%.
fn percent(share: f64) -> String {
    let value = share * 100.0;
    let decimals = match value {
        v if v >= 10.0 || v == 0.0 => 0,
        v if v >= 1.0 => 1,
        _ => 2,
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}%")
}

/// A log2 histogram as rows of bars, sized to the area: when there are more
/// buckets than rows, the rows that hold the most values.
fn histogram(frame: &mut Frame, area: Rect, title: &str, buckets: &[Bucket]) {
    let rows = (area.height as usize).saturating_sub(2).max(1);
    let buckets = if buckets.len() > rows {
        let start = (0..=buckets.len() - rows)
            .max_by_key(|&i| buckets[i..i + rows].iter().map(|b| b.count).sum::<u64>())
            .unwrap_or(0);
        &buckets[start..start + rows]
    } else {
        buckets
    };
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let bar_width = (area.width as usize).saturating_sub(32).max(4);
    let lines: Vec<Line> = buckets
        .iter()
        .map(|b| {
            let stars = if max == 0 {
                0
            } else {
                (b.count as usize * bar_width).div_ceil(max as usize)
            };
            Line::from(format!(
                "{:>9} {:>9} {:>7} {}",
                duration(b.from_ns),
                duration(b.to_ns),
                b.count,
                "█".repeat(stars)
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" {title} "))),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_keep_the_digits_that_matter() {
        assert_eq!(percent(0.12), "12%");
        assert_eq!(percent(0.01), "1%");
        assert_eq!(percent(0.009), "0.9%");
        assert_eq!(percent(0.0134), "1.3%");
        assert_eq!(percent(0.00051), "0.05%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
    }
}
