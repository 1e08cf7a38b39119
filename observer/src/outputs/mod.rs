//! Where the numbers go: the display (text or JSON `lines`, or the live
//! `screen`), the `prometheus` exporter and the `perfetto` recording, all fed
//! by the session through [`Outputs`]. `format` holds what they share; no output
//! imports another.

pub mod format;
pub mod lines;
pub mod otlp;
pub mod perfetto;
pub mod pprof;
pub mod prometheus;
pub mod screen;

use std::io::IsTerminal;

use anyhow::Result;
use gobpf_sched_common::{Event, event_kind};

use crate::{
    node::NodeShared,
    outputs::{
        format::{Header, preemption_line},
        lines::{Format, Printer, Sink},
        otlp::OtlpExporter,
        perfetto::{Recorder, Recording},
        prometheus::Exporter,
        screen::{Key, ProcessScreen, SharedScreens, Tui},
    },
    session::AttachArgs,
    sources::{drain::Snapshot, runtime_memory::SchedLayout},
    stats::{
        aggregate::Stats, census::Census, clock::Clock, cost::ProbeCost, cpu_samples::CpuView,
        names::Names, runtime_activity::RuntimeActivity, sched::SchedState, signals::Preemption,
    },
};

/// Where the reports are shown.
pub enum Display {
    Lines(Box<Printer>),
    Screen(Box<Tui>),
    /// This process's screen among many (`--all`), drawn by the node.
    Shared {
        pid: u32,
        screens: SharedScreens,
    },
}

/// Every output of a session.
pub struct Outputs {
    pub display: Display,
    exporter: Option<Exporter>,
    otlp: Option<OtlpExporter>,
    recorder: Option<Recorder>,
    /// Why the recording stopped early (a full disk): reported after the summary.
    recording_failed: Option<anyhow::Error>,
    /// `--events`: print each transition.
    print_transitions: bool,
    /// The session is one of many (`--all`): no line per signal.
    one_of_many: bool,
    format: Format,
    header: Header,
    sink: Sink,
}

/// What is left of the outputs once the session is over.
pub struct Closed {
    pub printer: Printer,
    pub recorder: Option<Recorder>,
    pub recording_failed: Option<anyhow::Error>,
}

impl Outputs {
    /// Opens what `args` ask for: the live screen when stdout is a terminal
    /// (unless `--plain`, `--json` or `--events`), else lines; the exporter; the
    /// recording of `record` (only the first image of a process is recorded).
    /// `live`: where the exporter reads the scheduler state at each scrape.
    pub fn open(
        args: &AttachArgs,
        header: Header,
        sched_note: Option<String>,
        live: Option<(u32, SchedLayout)>,
        record: Option<(&std::path::Path, &str)>,
        runtime: &tokio::runtime::Runtime,
        node: Option<&NodeShared>,
    ) -> Result<Self> {
        let format = if args.json {
            Format::Json
        } else {
            Format::Text
        };
        // Many processes write lines to one place, or share one screen.
        let live_screen = node.is_none() && Self::wants_screen(args);
        let sink = match node {
            Some(node) => node.sink.clone(),
            None => Sink::open(args)?,
        };
        if let Some(note) = &sched_note
            && !live_screen
        {
            eprintln!("gobpf-sched: no run-queue state: {note}");
        }
        let exporter = match (args.prometheus, node.and_then(|n| n.metrics.as_ref())) {
            (Some(_), Some(server)) => Some(server.serve(&header.labels, live)),
            (Some(address), None) => {
                let exporter = runtime.block_on(Exporter::start(address, &header.labels, live))?;
                eprintln!(
                    "gobpf-sched: Prometheus metrics on http://{}/metrics",
                    exporter.address
                );
                Some(exporter)
            }
            (None, _) => None,
        };
        if let Some(exporter) = &exporter {
            exporter.set_execs_followed(header.execs_followed);
        }
        let otlp = match &args.otlp {
            Some(url) => Some(OtlpExporter::start(url, args.interval, &header.labels)?),
            None => None,
        };
        // Many processes record into the node's one file.
        let recorder = match (record, node.and_then(|n| n.recording.clone())) {
            (Some((_, shown_as)), Some(recording)) => {
                Some(Recorder::new(recording, header.pid, shown_as)?)
            }
            (Some((path, shown_as)), None) => Some(Recorder::new(
                Recording::create(path, args.force)?,
                header.pid,
                shown_as,
            )?),
            (None, _) => None,
        };
        let display = match node.and_then(|n| n.screens.clone()) {
            Some(screens) => {
                let screen = ProcessScreen::new(header.clone(), sched_note);
                lock(&screens).insert(header.pid, screen);
                Display::Shared {
                    pid: header.pid,
                    screens,
                }
            }
            None if live_screen => {
                Display::Screen(Box::new(Tui::start(header.clone(), sched_note)?))
            }
            None => Display::Lines(Box::new(Printer::new(format, header.clone(), sink.clone()))),
        };
        Ok(Self {
            display,
            exporter,
            otlp,
            recorder,
            recording_failed: None,
            print_transitions: args.events,
            one_of_many: node.is_some(),
            format,
            header,
            sink,
        })
    }

    /// `--events` prints lines: it asks for a log, not a screen; a program
    /// started by `run` owns the terminal; `--output` writes a file.
    pub fn wants_screen(args: &AttachArgs) -> bool {
        !args.json
            && !args.plain
            && !args.events
            && !args.running_command
            && args.output.is_none()
            && std::io::stdout().is_terminal()
    }

    /// Whether the whole-run totals are shown each interval (they cost a pass
    /// over every goroutine).
    pub fn need_totals(&self) -> bool {
        self.exporter.is_some() || self.is_screen()
    }

    pub fn preemption(&mut self, preemption: &Preemption) -> Result<()> {
        match &mut self.display {
            // Many processes' signals would drown their reports: counted there.
            Display::Lines(_) if self.one_of_many => {}
            Display::Lines(printer) => printer.preemption(preemption)?,
            Display::Screen(tui) => tui.screen.preemption(preemption_line(preemption)),
            Display::Shared { pid, screens } => {
                if let Some(screen) = lock(screens).get_mut(pid) {
                    screen.preemption(preemption_line(preemption));
                }
            }
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.preemption(preemption);
        }
        Ok(())
    }

    pub fn transition(&mut self, event: &Event, clock: &Clock, names: &Names<'_>) -> Result<()> {
        // Only for the exact blame view (the syscall's end has it all).
        if event.kind == event_kind::SYSCALL_ENTER {
            return Ok(());
        }
        if self.print_transitions
            && let Display::Lines(printer) = &self.display
        {
            printer.transition(event, clock, names)?;
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.event(event);
        }
        Ok(())
    }

    /// One interval's report to every output. `totals` only when
    /// [`Outputs::need_totals`].
    pub fn interval(&mut self, report: &Report<'_>, names: &Names<'_>) -> Result<()> {
        match &mut self.display {
            Display::Lines(printer) => printer.interval(report)?,
            Display::Screen(tui) => {
                tui.screen.update(report);
                tui.draw()?;
            }
            Display::Shared { pid, screens } => {
                if let Some(screen) = lock(screens).get_mut(pid) {
                    screen.update(report);
                }
            }
        }
        if let Some(exporter) = &self.exporter {
            exporter.update(report);
        }
        if let Some(otlp) = &mut self.otlp {
            otlp.update(report);
        }
        self.record(|recorder| {
            if let Some(state) = report.sched {
                recorder.sched_state(report.monotonic_ns, state)?;
            }
            recorder.flush(names, &report.snapshot.goroutines)
        });
        Ok(())
    }

    /// The screen before the first interval: the scheduler state only.
    pub fn first_screen(&mut self, sched: Option<SchedState>) -> Result<()> {
        match &mut self.display {
            Display::Screen(tui) => {
                tui.screen.first_state(sched);
                tui.draw()?;
            }
            Display::Shared { pid, screens } => {
                if let Some(screen) = lock(screens).get_mut(pid) {
                    screen.first_state(sched);
                }
            }
            Display::Lines(_) => {}
        }
        Ok(())
    }

    /// Whether the live screen has the terminal (nothing else may print).
    pub fn is_screen(&self) -> bool {
        !matches!(self.display, Display::Lines(_))
    }

    /// True when the user pressed `q` (or Ctrl-C) on the live screen.
    pub fn quit_pressed(&mut self) -> Result<bool> {
        match &mut self.display {
            Display::Screen(tui) => Ok(matches!(tui.keys()?, Key::Quit)),
            // The node's screen reads the keys.
            Display::Lines(_) | Display::Shared { .. } => Ok(false),
        }
    }

    /// The target exec'd `exe` at `monotonic_ns`: marked in the recording (the
    /// lines and the screen say it with the summary).
    pub fn exec(&mut self, monotonic_ns: u64, exe: &str) {
        self.record(|recorder| recorder.exec(monotonic_ns, exe));
    }

    /// Closes the recording's open slices at `monotonic_ns`.
    pub fn finish_recording(&mut self, monotonic_ns: u64, names: &Names<'_>, last: &Snapshot) {
        self.record(|recorder| recorder.finish(monotonic_ns, names, &last.goroutines));
    }

    /// Ends the display (the terminal is restored before anything is printed on
    /// the normal screen) and the exporter; the summary is printed with what is
    /// returned.
    pub fn close(self) -> Closed {
        let Self {
            display,
            recorder,
            recording_failed,
            format,
            header,
            sink,
            otlp,
            ..
        } = self;
        // One of many screens: its last numbers stay, marked ended.
        if let Display::Shared { pid, screens } = &display
            && let Some(screen) = lock(screens).get_mut(pid)
        {
            screen.ended = true;
        }
        drop(display);
        // The last export: what the last interval recorded.
        if let Some(Err(error)) = otlp.map(OtlpExporter::shutdown) {
            eprintln!("gobpf-sched: {error:#}");
        }
        Closed {
            printer: Printer::new(format, header, sink),
            recorder,
            recording_failed,
        }
    }

    /// Runs a write to the recording. A failure (a full disk) ends the recording,
    /// not the session: what was written is kept, and the error is reported after
    /// the summary.
    fn record(&mut self, write: impl FnOnce(&mut Recorder) -> Result<()>) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        if let Err(error) = write(recorder) {
            let recorder = self.recorder.take().expect("checked above");
            let path = recorder.recording().path().display().to_string();
            let kept = recorder.recording().keep_incomplete();
            let error = error.context(format!(
                "cannot write the recording {path}; recording stopped{}",
                match kept {
                    Ok(()) => " (what was written is kept)".to_owned(),
                    Err(e) => format!(" and not kept ({e:#})"),
                }
            ));
            eprintln!("gobpf-sched: {error:#}");
            self.recording_failed = Some(error);
        }
    }
}

/// What one interval produced, for every output.
pub struct Report<'a> {
    pub stats: &'a Stats,
    /// Whole-run totals (empty unless the outputs need them).
    pub totals: &'a Stats,
    /// What the probes cost over the interval, and how much of it they covered.
    pub cost: &'a ProbeCost,
    pub sched: Option<&'a SchedState>,
    /// The runtime's own counters over the interval (no probe involved).
    pub runtime: Option<&'a RuntimeActivity>,
    /// The goroutine census, when taken this interval ...
    pub census: Option<&'a Census>,
    /// ... which is every this many intervals.
    pub census_every: u64,
    /// The CPU samples of the interval (None: not sampling).
    pub cpu: Option<&'a CpuView>,
    pub snapshot: &'a Snapshot,
    pub unix_ns: u64,
    pub monotonic_ns: u64,
    pub interval_ns: u64,
    /// Since attach.
    pub elapsed_ns: u64,
}

/// The screens, even if a session panicked holding them.
fn lock(
    screens: &SharedScreens,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u32, ProcessScreen>> {
    screens.lock().unwrap_or_else(|e| e.into_inner())
}
