//! One `attach` session: checks, attach, then drain/aggregate/show until Ctrl-C,
//! `q`, `--duration` or the target's exit; then the whole-run summary.
//!
//! Every interval: a snapshot of the kernel maps (aggregate) and a read of the
//! scheduler state (sched_state) go to the display (text/JSON lines, or the live
//! screen), the Prometheus exporter and the Perfetto recording.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;
use gobpf_sched_common::{Event, counter, event_kind};
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
    signals::SignalPairing,
    system,
    target::Target,
    tui::{Key, Tui},
    wait_reasons,
};

#[derive(clap::Args)]
pub struct AttachArgs {
    /// Process id of the Go program to watch (a thread id is taken as its process).
    #[arg(long, short)]
    pub pid: u32,
    /// How often to print a summary (e.g. 500ms, 1s, 2m; from 1ms to 1h).
    #[arg(long, short, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this long (at most 365d; default: until Ctrl-C or the target exits).
    #[arg(long, short, value_parser = parse_duration)]
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
    /// given without one; host names are resolved; other addresses only when named).
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:9464",
        value_parser = parse_listen_address
    )]
    pub prometheus: Option<SocketAddr>,
    /// Record a Perfetto trace (open it in ui.perfetto.dev): every run slice,
    /// syscall, park and preemption, and the run-queue lengths. A new file: an
    /// existing one is replaced only with --force; links, FIFOs and devices never.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Replace the --record file if it exists.
    #[arg(long, requires = "record")]
    pub force: bool,
    /// End the session when the target execs another program (by default the
    /// session follows it when the new program is a Go program).
    #[arg(long)]
    pub no_follow_exec: bool,
}

/// Shorter intervals are a busy loop of map reads; longer ones are no summary.
const INTERVALS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);
/// Past a year, a deadline is not what anyone means (and timers overflow).
const LONGEST_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !INTERVALS.contains(&interval) {
        return Err(format!("{text} is outside 1ms to 1h"));
    }
    Ok(interval)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < *INTERVALS.start() || duration > LONGEST_DURATION {
        return Err(format!(
            "{text} is outside 1ms to 365d (leave --duration out to watch until Ctrl-C)"
        ));
    }
    Ok(duration)
}

/// `HOST:PORT` or `IP:PORT`; a host name resolves to its first address.
fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addresses = text.to_socket_addrs().map_err(|e| format!("{e}: {text}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// Watches the target, and what it execs into when that is Go too.
pub fn run(args: AttachArgs) -> Result<()> {
    let started = Instant::now();
    let mut target = Target::find(args.pid)?;
    system::require_privileges()?;
    system::require_uprobes()?;
    let tracefs = system::ensure_tracefs()?;
    let signal_offsets = system::signal_generate_offsets(&tracefs)?;
    if let Some(address) = args.prometheus
        && !address.ip().is_loopback()
    {
        eprintln!(
            "gobpf-sched: WARNING: the metrics on {address} are open to the network: \
             anyone who reaches this host can read them (use 127.0.0.1 to keep them local)"
        );
    }
    let mut first_image = true;
    loop {
        let exe = target.exe_name().map_err(|e| target.explain(e))?;
        let shown_as = format!("process {} ({exe})", target.pid);
        let binary = match GoBinary::open(&target.exe, &shown_as) {
            // What the target exec'd into is not something we can watch: the
            // watching of the previous image ended cleanly.
            Err(error) if !first_image => {
                eprintln!("gobpf-sched: stopped watching: {error:#}");
                return Ok(());
            }
            Err(error) => return Err(target.explain(not_go_host(&target, &shown_as, error))),
            Ok(binary) => binary,
        };
        let image = Image {
            target: &target,
            binary: &binary,
            shown_as,
            signal_offsets,
            // A recording covers the first image.
            record: args.record.as_deref().filter(|_| first_image),
        };
        let end = match image.watch(&args, started) {
            // An image followed after an exec may end before it is attached.
            Err(_) if !first_image && !target.is_alive() => {
                eprintln!("gobpf-sched: process {} exited", target.pid);
                return Ok(());
            }
            end => end?,
        };
        match end {
            End::Exec(new_exe) if !args.no_follow_exec => {
                eprintln!(
                    "gobpf-sched: process {} exec'd {new_exe}: following it",
                    target.pid
                );
                target = Target::find(target.pid)?;
                first_image = false;
            }
            End::Exec(new_exe) => {
                eprintln!(
                    "gobpf-sched: process {} exec'd {new_exe}: session ended (--no-follow-exec)",
                    target.pid
                );
                return Ok(());
            }
            End::Done => return Ok(()),
        }
    }
}

/// `error`, or, when the program is not Go but has loaded a Go library (built
/// with `-buildmode=c-shared`), that this is not supported yet.
fn not_go_host(target: &Target, shown_as: &str, error: anyhow::Error) -> anyhow::Error {
    let Some(library) = target
        .mapped_libraries()
        .into_iter()
        .find(|path| GoBinary::is_go_file(path))
    else {
        return error;
    };
    let root = format!("/proc/{}/root", target.pid);
    anyhow::anyhow!(
        "{shown_as} is not a Go program, but it has loaded the Go library {} (built with \
         -buildmode=c-shared): watching Go code inside a program in another language is not \
         supported yet",
        library
            .strip_prefix(&root)
            .map_or(library.clone(), |p| Path::new("/").join(p))
            .display()
    )
}

/// One executable image of the target, between attach and exit, exec or stop.
struct Image<'a> {
    target: &'a Target,
    binary: &'a GoBinary,
    shown_as: String,
    signal_offsets: (u32, u32),
    record: Option<&'a Path>,
}

/// Why watching an image ended.
enum End {
    /// Stopped, or the target exited.
    Done,
    /// The target exec'd this program.
    Exec(String),
}

impl Image<'_> {
    fn watch(&self, args: &AttachArgs, started: Instant) -> Result<End> {
        let (target, binary) = (self.target, self.binary);
        let load_bias = target
            .load_bias(binary.pie, binary.first_segment_vaddr())
            .map_err(|e| target.explain(e))?;
        let facets = if args.only.is_empty() {
            Facet::ALL.to_vec()
        } else {
            let mut facets = args.only.clone();
            facets.sort();
            facets.dedup();
            facets
        };
        // Reads code from the executable again: the target may be gone by now.
        let plan = probes::plan(binary, &facets).map_err(|e| target.explain(e))?;
        // A recording needs every transition, like --events.
        let stream_events = args.events || self.record.is_some();
        let mut probes = probes::attach(
            target,
            binary,
            &plan,
            &facets,
            self.signal_offsets,
            stream_events,
        )
        .map_err(|e| target.explain(e))?;
        let collector = Collector::new(&mut probes.ebpf, args.top)?;
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
        let sched_layout = SchedLayout::new(binary, load_bias);
        let sched_note = sched_layout.as_ref().err().map(|e| format!("{e:#}"));
        // --events prints lines: it asks for a log, not a screen.
        let live_screen =
            !args.json && !args.plain && !args.events && std::io::stdout().is_terminal();
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
        let recorder = match self.record {
            Some(path) => Some(Recorder::create(
                path,
                args.force,
                target.pid,
                &self.shown_as,
            )?),
            None => None,
        };
        eprintln!(
            "gobpf-sched: attached to {}, {}: {} uprobes{} in {} ms. Ctrl-C to stop.",
            self.shown_as,
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
            recording_failed: None,
            print_transitions: args.events,
        };
        let result = runtime.block_on(watch(
            args,
            target,
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
            display,
            recorder,
            recording_failed,
            ..
        } = outputs;
        drop(display);
        let ended = result?;
        let printer = Printer::new(format, header);
        match &ended.how {
            How::TargetExited => eprintln!("gobpf-sched: process {} exited", target.pid),
            How::Exec(new_exe) => printer.exec(new_exe)?,
            How::Stopped => {}
        }
        printer.summary(&ended.total, ended.duration_ns)?;
        if let (Some(recorder), Some(path)) = (recorder, self.record) {
            let written = format!(
                "{} run slices, {} syscalls, {} parks, {} preemptions",
                recorder.run_slices, recorder.syscall_slices, recorder.parks, recorder.preemptions
            );
            recorder.keep()?;
            eprintln!(
                "gobpf-sched: recorded {written} to {} (open it in https://ui.perfetto.dev)",
                path.display()
            );
        }
        if let Some(failure) = recording_failed {
            return Err(failure);
        }
        Ok(match ended.how {
            How::Exec(new_exe) => End::Exec(new_exe),
            How::Stopped | How::TargetExited => End::Done,
        })
    }
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
    /// Why the recording stopped early (a full disk): reported after the summary.
    recording_failed: Option<anyhow::Error>,
    /// `--events`: print each transition.
    print_transitions: bool,
}

impl Outputs {
    fn preemption(&mut self, preemption: &Preemption) -> Result<()> {
        match &mut self.display {
            Display::Lines(printer) => printer.preemption(preemption)?,
            Display::Screen(screen) => screen.preemption(preemption_line(preemption)),
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.preemption(preemption);
        }
        Ok(())
    }

    fn transition(&mut self, event: &Event, clock: &Clock, names: &Names<'_>) -> Result<()> {
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

    /// Runs a write to the recording. A failure (a full disk) ends the recording,
    /// not the session: what was written is kept, and the error is reported after
    /// the summary.
    fn record(&mut self, write: impl FnOnce(&mut Recorder) -> Result<()>) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        if let Err(error) = write(recorder) {
            let recorder = self.recorder.take().expect("checked above");
            let path = recorder.path().display().to_string();
            let kept = recorder.keep_incomplete();
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

/// How often the ring buffer is drained (the probes never wake us up).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// ... and with `--events` or `--record`, whose records come thousands a second.
const DRAIN_EVENTS_EVERY: Duration = Duration::from_millis(10);

struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// Hands the drained records to the outputs: each SIGURG once resolved (with
/// where it landed and what it did), every transition as it comes.
fn dispatch(
    events: Vec<Event>,
    outputs: &mut Outputs,
    signals: &mut SignalPairing,
    now_ns: u64,
    clock: &Clock,
    names: &Names<'_>,
) -> Result<()> {
    for preemption in signals.resolve(&events, now_ns, clock, names) {
        outputs.preemption(&preemption)?;
    }
    for event in &events {
        if !matches!(
            event.kind,
            event_kind::PREEMPT | event_kind::PREEMPT_LANDED | event_kind::GC_SUSPENDED
        ) {
            outputs.transition(event, clock, names)?;
        }
    }
    Ok(())
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
    let mut how = How::Stopped;
    let mut signals = SignalPairing::default();
    let now = || read_clock(libc::CLOCK_MONOTONIC);
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
                dispatch(collector.drain_events(), outputs, &mut signals, now(), &clock, names)?;
                if let Display::Screen(screen) = &mut outputs.display
                    && let Key::Quit = screen.keys()?
                {
                    break;
                }
                if !target.is_alive() {
                    how = How::TargetExited;
                    break;
                }
                if collector.counters()?[counter::EXECS as usize] > 0 {
                    how = How::Exec(target.exe_name().unwrap_or_else(|e| format!("? ({e:#})")));
                    break;
                }
            }
            _ = report.tick() => {
                dispatch(collector.drain_events(), outputs, &mut signals, now(), &clock, names)?;
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
                    )?,
                    Display::Screen(screen) => {
                        let elapsed = attached_at.elapsed().as_nanos() as u64;
                        screen.update(&stats, interval_ns, &totals, sched.clone(), elapsed);
                        screen.draw()?;
                    }
                }
                if let Some(exporter) = &outputs.exporter {
                    exporter.update(&totals);
                }
                outputs.record(|recorder| {
                    if let Some(state) = &sched {
                        recorder.sched_state(read_clock(libc::CLOCK_MONOTONIC), state)?;
                    }
                    flush_recording(recorder, &now, names, None)
                });
                previous = now;
                previous_at = Instant::now();
            }
        }
    }
    dispatch(
        collector.drain_events(),
        outputs,
        &mut signals,
        u64::MAX,
        &clock,
        names,
    )?;
    let last = collector.snapshot()?;
    outputs.record(|recorder| {
        let end = read_clock(libc::CLOCK_MONOTONIC);
        flush_recording(recorder, &last, names, Some(end))
    });
    let total = Stats::between(&Snapshot::default(), &last, names, args.top);
    Ok(Ended {
        total,
        duration_ns: attached_at.elapsed().as_nanos() as u64,
        how,
    })
}

/// How a session ended.
struct Ended {
    /// Whole-run totals.
    total: Stats,
    duration_ns: u64,
    how: How,
}

enum How {
    /// Ctrl-C, SIGTERM, `q` or `--duration`.
    Stopped,
    TargetExited,
    /// The target exec'd this program.
    Exec(String),
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
