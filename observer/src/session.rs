//! One `attach` session: checks, attach, then drain/aggregate/show until Ctrl-C,
//! `q`, `--duration` or the target's exit; then the whole-run summary.
//!
//! Every interval: a snapshot of the kernel maps (aggregate) and a read of the
//! scheduler state (sched_state) go to the display (text/JSON lines, or the live
//! screen), the Prometheus exporter and the Perfetto recording.

use std::{
    collections::{HashMap, VecDeque},
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use gobpf_sched_common::{Event, event_kind};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    aggregate::{Clock, Names, Preemption, Stats, read_clock},
    binary::GoBinary,
    collect::{Collector, Snapshot},
    metrics::Exporter,
    output::{Format, Header, Printer, preemption_line},
    probes::{self, Facet},
    record::{Naming, Recorder},
    sched_state::{self, SchedLayout, SchedState},
    system,
    target::Target,
    tui::{Key, Tui},
    wait_reasons,
};

#[derive(clap::Args)]
pub struct AttachArgs {
    /// Process id of the Go program to watch.
    #[arg(long, short)]
    pub pid: u32,
    /// How often to print a summary (e.g. 500ms, 1s, 2m).
    #[arg(long, short, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C or the target exits).
    #[arg(long, short, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many goroutines to list in each summary.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also print where each probe is attached.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print every transition (run, stop, park, wake, create, exit, syscall) as it
    /// happens: each costs a ring-buffer record, so this is for short sessions.
    #[arg(long)]
    pub events: bool,
    /// Watch only these (comma-separated); only their probes are attached, which
    /// makes the session cheaper for the target. Default: everything.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Facet>,
    /// Print text summaries even when stdout is a terminal (the live screen is the
    /// default there; piped output always gets text).
    #[arg(long, conflicts_with = "json")]
    pub plain: bool,
    /// Serve Prometheus metrics on /metrics at this address (127.0.0.1:9464 when
    /// given without one; other addresses only when named).
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:9464"
    )]
    pub prometheus: Option<SocketAddr>,
    /// Record a Perfetto trace (open it in ui.perfetto.dev): every run slice,
    /// syscall, park and preemption, and the run-queue lengths.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

pub fn run(args: AttachArgs) -> Result<()> {
    let started = Instant::now();
    let target = Target::find(args.pid)?;
    system::require_privileges()?;
    let shown_as = format!("process {} ({})", target.pid, target.exe_name()?);
    let binary = GoBinary::open(&target.exe, &shown_as)?;
    system::require_uprobes()?;
    let tracefs = system::ensure_tracefs()?;
    let signal_offsets = system::signal_generate_offsets(&tracefs)?;
    let load_bias = target.load_bias(binary.pie, binary.first_segment_vaddr())?;

    let facets = if args.only.is_empty() {
        Facet::ALL.to_vec()
    } else {
        let mut facets = args.only.clone();
        facets.sort();
        facets.dedup();
        facets
    };
    let plan = probes::plan(&binary, &facets)?;
    // A recording needs every transition, like --events.
    let stream_events = args.events || args.record.is_some();
    let mut probes = probes::attach(
        &target,
        &binary,
        &plan,
        &facets,
        signal_offsets,
        stream_events,
    )?;
    let collector = Collector::new(&mut probes.ebpf)?;
    if args.verbose {
        for probe in &plan {
            eprintln!(
                "gobpf-sched: uprobe on {} ({:#x}) +{} ({:?}) at file offset {:#x}",
                probe.function,
                probe.address,
                probe.site_offset,
                probe.placement,
                probe.file_offset
            );
        }
        eprintln!(
            "gobpf-sched: functions from {:?}, struct offsets from {:?}: {:?}",
            binary.symbols_from, binary.layout_from, binary.offsets
        );
    }
    let header = Header {
        pid: target.pid,
        go_version: binary.build.go_version.clone(),
        facets: facets.clone(),
    };
    let sched_layout = SchedLayout::new(&binary, load_bias);
    let sched_note = sched_layout.as_ref().err().map(|e| format!("{e:#}"));
    // --events prints lines: it asks for a log, not a screen.
    let live_screen = !args.json && !args.plain && !args.events && std::io::stdout().is_terminal();
    if let Some(note) = &sched_note
        && !live_screen
    {
        eprintln!("gobpf-sched: no run-queue state: {note}");
    }
    let sched_layout = sched_layout.ok();
    let attached_at = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Ctrl-C and SIGTERM are handled from here on, before the user is told.
    let _context = runtime.enter();
    let stop_signals = StopSignals {
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
    };
    let exporter = match args.prometheus {
        Some(address) => {
            let live = sched_layout.clone().map(|layout| (target.pid, layout));
            let exporter = runtime.block_on(Exporter::start(address, live))?;
            eprintln!(
                "gobpf-sched: Prometheus metrics on http://{}/metrics",
                exporter.address
            );
            Some(exporter)
        }
        None => None,
    };
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(path, target.pid, &shown_as)?),
        None => None,
    };
    eprintln!(
        "gobpf-sched: attached to {shown_as}, {}: {} uprobes{} in {} ms. Ctrl-C to stop.",
        binary.build.go_version,
        plan.len(),
        if facets.contains(&Facet::Preemptions) {
            " + SIGURG tracepoint"
        } else {
            ""
        },
        started.elapsed().as_millis()
    );
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let display = if live_screen {
        Display::Screen(Box::new(Tui::start(header.clone(), sched_note)?))
    } else {
        Display::Lines(Printer::new(format, header.clone()))
    };

    let function_at = |pc: u64| {
        binary
            .function_at(pc.wrapping_sub(load_bias))
            .map(str::to_owned)
    };
    let names = Names {
        reasons: &binary.wait_reasons,
        function_at: &function_at,
    };
    let mut outputs = Outputs {
        display,
        exporter,
        recorder,
        print_transitions: args.events,
    };
    let result = runtime.block_on(watch(
        &args,
        &target,
        collector,
        sched_layout.as_ref(),
        &names,
        &mut outputs,
        attached_at,
        stop_signals,
    ));
    drop(probes); // detach before printing the end of the session
    // The screen is restored before anything is printed on the normal one.
    let Outputs {
        display, recorder, ..
    } = outputs;
    drop(display);
    let ended = result?;
    if ended.target_exited {
        eprintln!("gobpf-sched: process {} exited", target.pid);
    }
    Printer::new(format, header).summary(&ended.total, ended.duration_ns);
    if let (Some(recorder), Some(path)) = (&recorder, &args.record) {
        eprintln!(
            "gobpf-sched: recorded {} run slices, {} syscalls, {} parks, {} preemptions to {} \
             (open it in https://ui.perfetto.dev)",
            recorder.run_slices,
            recorder.syscall_slices,
            recorder.parks,
            recorder.preemptions,
            path.display()
        );
    }
    Ok(())
}

/// Where the numbers go.
enum Display {
    Lines(Printer),
    Screen(Box<Tui>),
}

struct Outputs {
    display: Display,
    exporter: Option<Exporter>,
    recorder: Option<Recorder>,
    /// `--events`: print each transition.
    print_transitions: bool,
}

impl Outputs {
    fn preemption(&mut self, preemption: &Preemption) {
        match &mut self.display {
            Display::Lines(printer) => printer.preemption(preemption),
            Display::Screen(screen) => screen.preemption(preemption_line(preemption)),
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.preemption(preemption);
        }
    }

    fn transition(&mut self, event: &Event, clock: &Clock, names: &Names<'_>) {
        if self.print_transitions
            && let Display::Lines(printer) = &self.display
        {
            printer.transition(event, clock, names);
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.event(event);
        }
    }
}

/// How often the ring buffer is drained (the probes never wake us up).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// ... and with `--events` or `--record`, whose records come thousands a second.
const DRAIN_EVENTS_EVERY: Duration = Duration::from_millis(10);

struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// Pairs SIGURG records with the Go handler's report of where each landed, and
/// hands every record to the outputs.
fn dispatch(events: Vec<Event>, outputs: &mut Outputs, clock: &Clock, names: &Names<'_>) {
    // Where each thread's SIGURG landed, reported by the Go signal handler
    // microseconds after the signal was generated: pair them by thread.
    let mut landed: HashMap<u32, VecDeque<&Event>> = HashMap::new();
    for event in events
        .iter()
        .filter(|e| e.kind == event_kind::PREEMPT_LANDED)
    {
        landed.entry(event.tid).or_default().push_back(event);
    }
    for event in &events {
        match event.kind {
            event_kind::PREEMPT => {
                let mut preemption = Preemption::from_event(event, clock);
                // The first landing on that thread after the signal was sent.
                let queue = landed.entry(event.tid).or_default();
                while queue.front().is_some_and(|l| l.ts_ns < event.ts_ns) {
                    queue.pop_front();
                }
                if let Some(landing) = queue.pop_front() {
                    preemption.landed_in = (names.function_at)(landing.value);
                    preemption.landed_goid = Some(landing.goid);
                }
                outputs.preemption(&preemption);
            }
            event_kind::PREEMPT_LANDED => {}
            _ => outputs.transition(event, clock, names),
        }
    }
}

/// Writes the recorded transitions, naming goroutines from the latest snapshot.
fn flush_recording(
    recorder: &mut Recorder,
    snapshot: &Snapshot,
    names: &Names<'_>,
    finish_at: Option<u64>,
) -> Result<()> {
    let start_function = |goid: u64| {
        snapshot
            .goroutines
            .get(&goid)
            .filter(|g| g.start_pc != 0)
            .and_then(|g| (names.function_at)(g.start_pc))
    };
    let reason = |reason: u64| wait_reasons::name(names.reasons, reason as usize);
    let naming = Naming {
        start_function: &start_function,
        reason: &reason,
    };
    match finish_at {
        Some(ts) => recorder.finish(ts, &naming),
        None => recorder.flush(&naming),
    }
}

/// Runs until a stop.
#[allow(clippy::too_many_arguments)]
async fn watch(
    args: &AttachArgs,
    target: &Target,
    mut collector: Collector,
    sched_layout: Option<&SchedLayout>,
    names: &Names<'_>,
    outputs: &mut Outputs,
    attached_at: Instant,
    mut stop: StopSignals,
) -> Result<Ended> {
    let clock = Clock::measure();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::from_std(attached_at + d));
    let mut drain = tokio::time::interval(if args.events || args.record.is_some() {
        DRAIN_EVENTS_EVERY
    } else {
        DRAIN_EVERY
    });
    let mut report = tokio::time::interval(args.interval);
    report.tick().await; // the first tick is immediate
    let mut previous = Snapshot::default();
    let mut previous_at = Instant::now();
    let mut target_exited = false;
    let read_sched = || -> Option<SchedState> {
        sched_layout.and_then(|layout| sched_state::read(target.pid, layout).ok())
    };
    if let Display::Screen(screen) = &mut outputs.display {
        let none = Stats::default();
        screen.update(&none, 0, &none, read_sched(), 0);
        screen.draw()?;
    }
    loop {
        tokio::select! {
            _ = stop.interrupt.recv() => break,
            _ = stop.terminate.recv() => break,
            _ = sleep_until(deadline) => break,
            _ = drain.tick() => {
                dispatch(collector.drain_events(), outputs, &clock, names);
                if let Display::Screen(screen) = &mut outputs.display
                    && let Key::Quit = screen.keys()?
                {
                    break;
                }
                if !target.is_alive() {
                    target_exited = true;
                    break;
                }
            }
            _ = report.tick() => {
                dispatch(collector.drain_events(), outputs, &clock, names);
                let now = collector.snapshot()?;
                let stats = Stats::between(&previous, &now, names, args.top);
                let sched = read_sched();
                let interval_ns = previous_at.elapsed().as_nanos() as u64;
                let need_totals = outputs.exporter.is_some()
                    || matches!(outputs.display, Display::Screen(_));
                let totals = if need_totals {
                    Stats::between(&Snapshot::default(), &now, names, args.top)
                } else {
                    Stats::default()
                };
                match &mut outputs.display {
                    Display::Lines(printer) => printer.interval(
                        &stats,
                        sched.as_ref(),
                        clock.now_unix_ns(),
                        interval_ns,
                    ),
                    Display::Screen(screen) => {
                        let elapsed = attached_at.elapsed().as_nanos() as u64;
                        screen.update(&stats, interval_ns, &totals, sched.clone(), elapsed);
                        screen.draw()?;
                    }
                }
                if let Some(exporter) = &outputs.exporter {
                    exporter.update(&totals);
                }
                if let Some(recorder) = &mut outputs.recorder {
                    if let Some(state) = &sched {
                        recorder.sched_state(read_clock(libc::CLOCK_MONOTONIC), state)?;
                    }
                    flush_recording(recorder, &now, names, None)?;
                }
                previous = now;
                previous_at = Instant::now();
            }
        }
    }
    dispatch(collector.drain_events(), outputs, &clock, names);
    let last = collector.snapshot()?;
    if let Some(recorder) = &mut outputs.recorder {
        let end = read_clock(libc::CLOCK_MONOTONIC);
        flush_recording(recorder, &last, names, Some(end))?;
    }
    let total = Stats::between(&Snapshot::default(), &last, names, args.top);
    Ok(Ended {
        total,
        duration_ns: attached_at.elapsed().as_nanos() as u64,
        target_exited,
    })
}

/// How a session ended.
struct Ended {
    /// Whole-run totals.
    total: Stats,
    duration_ns: u64,
    target_exited: bool,
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
