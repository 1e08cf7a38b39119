//! One `attach` session: checks, attach, then drain/aggregate/print until Ctrl-C,
//! `--duration` or the target's exit; then the whole-run summary.

use std::time::{Duration, Instant};

use anyhow::Result;
use gobpf_sched_common::{Event, event_kind};
use std::collections::{HashMap, VecDeque};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    aggregate::{Clock, Names, Preemption, Stats},
    binary::GoBinary,
    collect::{Collector, Snapshot},
    output::{Format, Header, Printer},
    probes::{self, Facet},
    system,
    target::Target,
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
}

/// How often the ring buffer is drained (the probes never wake us up).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// ... and with `--events`, whose records come thousands a second.
const DRAIN_EVENTS_EVERY: Duration = Duration::from_millis(10);

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
    let mut probes = probes::attach(
        &target,
        &binary,
        &plan,
        &facets,
        signal_offsets,
        args.events,
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
    let printer = Printer::new(
        if args.json {
            Format::Json
        } else {
            Format::Text
        },
        Header {
            pid: target.pid,
            go_version: binary.build.go_version.clone(),
            facets: facets.clone(),
        },
    );
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

    let function_at = |pc: u64| {
        binary
            .function_at(pc.wrapping_sub(load_bias))
            .map(str::to_owned)
    };
    let names = Names {
        reasons: &binary.wait_reasons,
        function_at: &function_at,
    };
    let result = runtime.block_on(watch(
        &args,
        &target,
        collector,
        &names,
        &printer,
        attached_at,
        stop_signals,
    ));
    drop(probes); // detach before printing the end of the session
    result
}

struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

async fn watch(
    args: &AttachArgs,
    target: &Target,
    mut collector: Collector,
    names: &Names<'_>,
    printer: &Printer,
    attached_at: Instant,
    mut stop: StopSignals,
) -> Result<()> {
    let clock = Clock::measure();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::from_std(attached_at + d));
    let mut drain = tokio::time::interval(if args.events {
        DRAIN_EVENTS_EVERY
    } else {
        DRAIN_EVERY
    });
    let mut report = tokio::time::interval(args.interval);
    report.tick().await; // the first tick is immediate
    let mut previous = Snapshot::default();
    let mut previous_at = Instant::now();

    let print_events = |collector: &mut Collector| {
        let events = collector.drain_events();
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
                    let mut preemption = Preemption::from_event(event, &clock);
                    // The first landing on that thread after the signal was sent.
                    let queue = landed.entry(event.tid).or_default();
                    while queue.front().is_some_and(|l| l.ts_ns < event.ts_ns) {
                        queue.pop_front();
                    }
                    if let Some(landing) = queue.pop_front() {
                        preemption.landed_in = (names.function_at)(landing.value);
                        preemption.landed_goid = Some(landing.goid);
                    }
                    printer.preemption(&preemption);
                }
                event_kind::PREEMPT_LANDED => {}
                _ => printer.transition(event, &clock, names),
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.interrupt.recv() => break,
            _ = stop.terminate.recv() => break,
            _ = sleep_until(deadline) => break,
            _ = drain.tick() => {
                print_events(&mut collector);
                if !target.is_alive() {
                    eprintln!("gobpf-sched: process {} exited", target.pid);
                    break;
                }
            }
            _ = report.tick() => {
                print_events(&mut collector);
                let now = collector.snapshot()?;
                let stats = Stats::between(&previous, &now, names, args.top);
                printer.interval(&stats, clock.now_unix_ns(), previous_at.elapsed().as_nanos() as u64);
                previous = now;
                previous_at = Instant::now();
            }
        }
    }
    print_events(&mut collector);
    let total = Stats::between(
        &Snapshot::default(),
        &collector.snapshot()?,
        names,
        args.top,
    );
    printer.summary(&total, attached_at.elapsed().as_nanos() as u64);
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
