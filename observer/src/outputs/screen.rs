//! The live terminal screen (ratatui + crossterm), used when stdout is a terminal:
//! scheduler state with a bar per P, the latency and run-slice histograms, wait
//! reasons, the busiest goroutines and a scrolling preemption log, redrawn every
//! interval. Keys: `q` quits, `p` pauses, arrow keys scroll the log.
//!
//! The terminal is restored when the screen is dropped (any return, any error)
//! and by ratatui's panic hook on a panic.

use std::{collections::VecDeque, time::Duration};

use anyhow::{Context, Result};
use crossterm::event::{self, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::{
    DefaultTerminal, Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::Line,
    widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table},
};

use crate::{
    outputs::format::{Header, by_value_descending, duration, p99_or_dash},
    stats::{
        aggregate::{Bucket, Stats},
        sched::SchedState,
    },
};

/// Preemption lines kept for scrolling back.
const LOG_LINES: usize = 2000;

pub enum Key {
    Quit,
    Nothing,
}

pub struct Tui {
    terminal: DefaultTerminal,
    header: Header,
    /// The last interval, the whole run, and the scheduler state.
    interval: Stats,
    interval_ns: u64,
    totals: Stats,
    sched: Option<SchedState>,
    /// Why there is no scheduler state, if there is none.
    sched_note: Option<String>,
    log: VecDeque<String>,
    /// Lines scrolled back from the newest.
    scroll: usize,
    paused: bool,
    elapsed_ns: u64,
}

impl Tui {
    pub fn start(header: Header, sched_note: Option<String>) -> Result<Self> {
        let terminal = ratatui::try_init().context("cannot set up the terminal screen")?;
        Ok(Self {
            terminal,
            header,
            interval: Stats::default(),
            interval_ns: 0,
            totals: Stats::default(),
            sched: None,
            sched_note,
            log: VecDeque::new(),
            scroll: 0,
            paused: false,
            elapsed_ns: 0,
        })
    }

    /// New numbers; kept off the screen while paused.
    pub fn update(
        &mut self,
        interval: &Stats,
        interval_ns: u64,
        totals: &Stats,
        sched: Option<SchedState>,
        elapsed_ns: u64,
    ) {
        if self.paused {
            return;
        }
        self.interval = interval.clone();
        self.interval_ns = interval_ns;
        self.totals = totals.clone();
        self.sched = sched;
        self.elapsed_ns = elapsed_ns;
    }

    pub fn preemption(&mut self, line: String) {
        self.log.push_back(line);
        if self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }

    /// Handles the keys pressed since the last call, without waiting.
    pub fn keys(&mut self) -> Result<Key> {
        while event::poll(Duration::ZERO)? {
            let event::Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(Key::Quit),
                // Raw mode turns Ctrl-C into a key instead of SIGINT.
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(Key::Quit);
                }
                KeyCode::Char('p') => self.paused = !self.paused,
                KeyCode::Up => self.scroll = (self.scroll + 1).min(self.log.len()),
                KeyCode::Down => self.scroll = self.scroll.saturating_sub(1),
                KeyCode::PageUp => self.scroll = (self.scroll + 10).min(self.log.len()),
                KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
                _ => {}
            }
        }
        Ok(Key::Nothing)
    }

    pub fn draw(&mut self) -> Result<()> {
        let Self { terminal, .. } = self;
        let view = View {
            header: &self.header,
            interval: &self.interval,
            interval_ns: self.interval_ns,
            totals: &self.totals,
            sched: self.sched.as_ref(),
            sched_note: self.sched_note.as_deref(),
            log: &self.log,
            scroll: self.scroll,
            paused: self.paused,
            elapsed_ns: self.elapsed_ns,
        };
        terminal.draw(|frame| view.render(frame))?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

struct View<'a> {
    header: &'a Header,
    interval: &'a Stats,
    interval_ns: u64,
    totals: &'a Stats,
    sched: Option<&'a SchedState>,
    sched_note: Option<&'a str>,
    log: &'a VecDeque<String>,
    scroll: usize,
    paused: bool,
    elapsed_ns: u64,
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
        let [latency, slices] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(middle);
        histogram(
            frame,
            latency,
            "run-queue latency (last interval)",
            &self.interval.runq_latency_histogram,
        );
        histogram(
            frame,
            slices,
            "on-CPU slice length (last interval)",
            &self.interval.run_slice_histogram,
        );
        let [reasons, goroutines] =
            Layout::horizontal([Constraint::Length(52), Constraint::Min(40)]).areas(bottom);
        self.wait_reasons(frame, reasons);
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
        if self.paused {
            text.push_str(" — PAUSED");
        }
        text.push_str("   q quit · p pause · ↑↓ scroll");
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
        let title = format!(" scheduler — last {} ", duration(self.interval_ns));
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
