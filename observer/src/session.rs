//! The `attach` command: its arguments, and the session — checks, attach, then
//! drain / aggregate / show until Ctrl-C, `q`, `--duration`, the target's exit or
//! exec; then the whole-run summary. An exec into another Go program is followed.
//!
//! Every interval a snapshot of the kernel maps and a read of the scheduler
//! state become `stats`, which go to every output.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use gobpf_sched_common::{Counters, Event, counter, event_kind, sample_flags, stream};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    binary::GoBinary,
    facet::Facet,
    node::{self, NodeShared},
    outputs::{
        Closed, Outputs, Report,
        format::Header,
        pprof::{self, ProfileSample, ProfileSpec},
    },
    sources::{
        block_stacks::BlockSite,
        calibration::HitCost,
        drain::{Collector, Snapshot},
        goroutines::{self, GoroutinesLayout},
        kernel::{self, Kernel},
        probes::{self, ProcessConfig, ProcessSlot},
        runtime_memory::{self, SchedLayout},
        sampler,
        windows::{self, Windows, lock},
    },
    stats::{
        aggregate::Stats,
        blame::ExactBlame,
        census::{Census, CensusTaker},
        clock::{Clock, read_clock},
        cost::ProbeCost,
        cpu_samples::{CpuView, FunctionNames, NamedSamples},
        names::{self, Names},
        runtime_activity::{RuntimeActivity, RuntimeSummary},
        sched::SchedState,
        signals::SignalPairing,
    },
    target::{
        Target,
        labels::ProcessLabels,
        launch::{self, Launched},
        machine,
    },
};

#[derive(clap::Args, Clone)]
pub struct AttachArgs {
    /// Process id of the Go program to watch (a thread id is taken as its
    /// process); several (`--pid 1,2` or `--pid 1 --pid 2`) are watched
    /// side by side. `attach` needs it or --all; `run` starts its own.
    #[arg(long, short, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Watch every Go process of the host: those running now, and each one
    /// started later (picked up at its exec). Other processes are skipped.
    #[arg(long)]
    pub all: bool,
    /// With --all: only processes whose executable has this file name
    /// (repeatable).
    #[arg(long, value_name = "NAME", requires = "all")]
    pub exe: Vec<String>,
    /// With --all: only processes of this container (its id, or a prefix of
    /// it as `docker ps` and `crictl ps` show; repeatable).
    #[arg(long, value_name = "ID", requires = "all")]
    pub container: Vec<String>,
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
    /// Push the metrics over OTLP (HTTP/protobuf) to this URL every interval,
    /// e.g. http://localhost:4318/v1/metrics: OpenTelemetry semantic conventions
    /// for the process and the Go runtime, gobpf_sched.* for the rest.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
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
    /// How much of the target's CPU time the transition probes may cost, in
    /// percent: they are attached in windows (at least 200 ms) and detached in
    /// between to stay within it, and counts from windows are shown as such
    /// (coverage, estimated rates). A quiet program keeps them all the time.
    #[arg(long, value_name = "PCT", default_value_t = 1.0, value_parser = parse_budget)]
    pub overhead_budget: f64,
    /// Keep the transition probes attached all the time, whatever they cost
    /// (exact counts; a warning when the cost passes the budget). Implied by
    /// --events and --record, which need every transition.
    #[arg(long)]
    pub exact: bool,
    /// CPU samples a second on each CPU (the software cpu-clock; 0: none):
    /// where the target's CPU time goes, by goroutine and stack, and who held
    /// the Ps while goroutines waited. Its cost does not grow with the
    /// scheduling rate.
    #[arg(long, value_name = "HZ", default_value_t = sampler::DEFAULT_HZ, value_parser = parse_sample_hz)]
    pub sample_hz: u64,
    /// Write a CPU profile of the target to this file when the session ends
    /// (gzipped profile.proto: `go tool pprof FILE`), from the CPU samples:
    /// stacks with file:line, labels `goid` and `start_function`.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
    /// Write a block profile to this file when the session ends (gzipped
    /// profile.proto, like Go's block profile: where goroutines parked, as
    /// contentions and delay, with the wait reason as label `reason`). Each
    /// park then takes its stack (~1 µs more per park); from the windows of
    /// the transition probes (all the time with --exact).
    #[arg(long, value_name = "FILE")]
    pub block_profile: Option<PathBuf>,
    /// Write the reports to this file instead of stdout (`run`: stderr).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Set by `run`: the program's stdout is its own, the reports go to
    /// stderr, and signals are forwarded to it.
    #[arg(skip)]
    pub running_command: bool,
}

impl AttachArgs {
    /// The budget as a share of the target's CPU time; None in exact mode.
    pub fn budget(&self) -> Option<f64> {
        (!self.exact_mode()).then_some(self.overhead_budget / 100.0)
    }

    pub fn exact_mode(&self) -> bool {
        self.exact || self.events || self.record.is_some()
    }
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

/// A percentage above 0, at most 100.
fn parse_budget(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("{e}: {text}"))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!(
            "{text} is not a percentage above 0 and at most 100 (use --exact for no limit)"
        ));
    }
    Ok(percent)
}

/// 0 (off) to 1000 samples a second.
fn parse_sample_hz(text: &str) -> Result<u64, String> {
    let hz: u64 = text.parse().map_err(|e| format!("{e}: {text}"))?;
    if hz > MAX_SAMPLE_HZ {
        return Err(format!(
            "{text} is above {MAX_SAMPLE_HZ} samples a second (each costs the target a \
             timer interrupt's worth of work)"
        ));
    }
    Ok(hz)
}

const MAX_SAMPLE_HZ: u64 = 1000;

/// `HOST:PORT` or `IP:PORT`; a host name resolves to its first address.
fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addresses = text.to_socket_addrs().map_err(|e| format!("{e}: {text}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// `gobpf-sched run [options] -- COMMAND ARGS...`.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub options: AttachArgs,
    /// The program to start, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `run`: starts the program held, watches it from its first instruction,
/// and returns its exit status.
pub fn run_command(mut args: RunArgs) -> Result<u8> {
    if !args.options.pid.is_empty() || args.options.all {
        anyhow::bail!(
            "run starts its own process: leave --pid out (or use attach --pid to watch a \
             running one)"
        );
    }
    args.options.running_command = true;
    machine::require_privileges()?;
    launch::track_interrupt_origin()?;
    let started = Instant::now();
    let mut launched = Launched::start(&args.command)?;
    let target = Target::find(launched.pid())?;
    let mut release = || launched.release();
    // Failing before the release kills the program (it never ran).
    watch(&args.options, target, started, Some(&mut release))?;
    launched.exit_code()
}

/// `attach`: watches the target, and what it execs into when that is Go too;
/// or several processes, or every Go process of the host (`node`).
pub fn run(args: AttachArgs) -> Result<()> {
    match args.pid.as_slice() {
        [pid] if !args.all => watch(&args, Target::find(*pid)?, Instant::now(), None),
        [] if !args.all => anyhow::bail!(
            "attach needs --pid PID, the Go process to watch, or --all for every Go process \
             (or start one with `gobpf-sched run [options] -- COMMAND ARGS...`)"
        ),
        _ => node::run(&args),
    }
}

/// Watches `target` (held stopped by `held` until the probes are attached).
pub fn watch(
    args: &AttachArgs,
    target: Target,
    started: Instant,
    held: Option<&mut dyn FnMut() -> Result<()>>,
) -> Result<()> {
    check_profile_paths(args)?;
    let signal_offsets = check_machine(args)?;
    let kernel = Arc::new(load_kernel(args, signal_offsets, false).map_err(|e| target.explain(e))?);
    follow(args, target, started, held, &kernel, None)
}

/// What every session needs of the machine (said before anything is
/// loaded); returns where the SIGURG tracepoint's fields are.
pub fn check_machine(args: &AttachArgs) -> Result<(u32, u32)> {
    machine::require_privileges()?;
    machine::require_uprobes()?;
    let tracefs = machine::ensure_tracefs()?;
    let signal_offsets = machine::signal_generate_offsets(&tracefs)?;
    if let Some(address) = args.prometheus
        && !address.ip().is_loopback()
    {
        eprintln!(
            "gobpf-sched: WARNING: the metrics on {address} are open to the network: \
             anyone who reaches this host can read them (use 127.0.0.1 to keep them local)"
        );
    }
    Ok(signal_offsets)
}

/// Loads the kernel programs for what `args` watch; `discovery`: report
/// every new process (`--all`).
pub fn load_kernel(
    args: &AttachArgs,
    signal_offsets: (u32, u32),
    discovery: bool,
) -> Result<Kernel> {
    let facets = watched_facets(args);
    Kernel::load(&kernel::Settings {
        stream_events: stream_events(args, &facets),
        signals: facets.contains(&Facet::Preemptions),
        sample_hz: args.sample_hz,
        block_stacks: args.block_profile.is_some(),
        discovery,
        signal_offsets,
    })
}

/// Watches `target` with the loaded programs, and what it execs into when
/// that is Go too. `node`: what the sessions of many processes share.
pub fn follow(
    args: &AttachArgs,
    mut target: Target,
    started: Instant,
    mut held: Option<&mut dyn FnMut() -> Result<()>>,
    kernel: &Arc<Kernel>,
    node: Option<&NodeShared>,
) -> Result<()> {
    let mut execs_followed = 0;
    loop {
        let first_image = execs_followed == 0;
        let exe = target.exe_name().map_err(|e| target.explain(e))?;
        let shown_as = format!("process {} ({exe})", target.pid);
        // Many processes of one executable share its parse.
        let opened = match node {
            Some(node) => node.binary(&target.exe, &shown_as),
            None => GoBinary::open(&target.exe, &shown_as).map(Arc::new),
        };
        let binary = match opened {
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
            kernel,
            node,
            target: &target,
            binary: &binary,
            shown_as,
            // A recording covers the first image.
            record: args.record.as_deref().filter(|_| first_image),
            pprof: args.pprof.as_deref().filter(|_| first_image),
            block_profile: args.block_profile.as_deref().filter(|_| first_image),
            executable: PathBuf::from(&exe),
            execs_followed,
        };
        let end = match image.watch(args, started, held.take()) {
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
                execs_followed += 1;
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

/// What a uprobe hit costs, and what the budget makes of it.
pub fn say_hit_cost(args: &AttachArgs, hit_cost: &HitCost) {
    eprintln!(
        "gobpf-sched: a uprobe hit costs {:.0} ns here (measured in {} ms); {}",
        hit_cost.ns,
        hit_cost.took.as_millis(),
        match args.budget() {
            Some(_) => format!(
                "transition probes within {}% of each target's CPU time (--exact: always on)",
                args.overhead_budget
            ),
            None => "transition probes always on (exact mode)".to_owned(),
        }
    );
}

/// `--pprof` and `--block-profile` are written at the end: what would fail
/// then is said now.
fn check_profile_paths(args: &AttachArgs) -> Result<()> {
    if args.pprof.is_some() && args.sample_hz == 0 {
        anyhow::bail!("--pprof writes the CPU samples: it needs --sample-hz above 0");
    }
    if args.block_profile.is_some() && !watched_facets(args).contains(&Facet::Goroutines) {
        anyhow::bail!("--block-profile needs the goroutines facet (see --only)");
    }
    let paths = [
        ("--pprof", &args.pprof),
        ("--block-profile", &args.block_profile),
    ];
    for (flag, path) in paths {
        let Some(path) = path else { continue };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "cannot write {flag} {}: {} is not a directory",
                path.display(),
                dir.display()
            );
        }
        if path.is_dir() {
            anyhow::bail!("cannot write {flag} {}: it is a directory", path.display());
        }
    }
    Ok(())
}

/// `error`, or, when the program is not Go but has loaded a Go library (built
/// with `-buildmode=c-shared`), that this is not supported yet.
fn not_go_host(target: &Target, shown_as: &str, error: anyhow::Error) -> anyhow::Error {
    // A Go executable that cannot be watched (its version, its layout) has its
    // own reason: the libraries are searched only when the program is not Go.
    if GoBinary::is_go_file(&target.exe) {
        return error;
    }
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
    kernel: &'a Arc<Kernel>,
    /// What the sessions of many processes share (`node`).
    node: Option<&'a NodeShared>,
    target: &'a Target,
    binary: &'a GoBinary,
    shown_as: String,
    record: Option<&'a Path>,
    /// Where the CPU profile goes (the first image's) ...
    pprof: Option<&'a Path>,
    /// ... and the block profile.
    block_profile: Option<&'a Path>,
    /// The executable's path, read at attach (`/proc/PID/exe` goes with the
    /// process).
    executable: PathBuf,
    /// Execs followed before this image.
    execs_followed: u64,
}

/// Why watching an image ended.
enum End {
    /// Stopped, or the target exited.
    Done,
    /// The target exec'd this program.
    Exec(String),
}

impl Image<'_> {
    /// `release`: lets a held target go once everything is attached.
    fn watch(
        &self,
        args: &AttachArgs,
        started: Instant,
        release: Option<&mut dyn FnMut() -> Result<()>>,
    ) -> Result<End> {
        let (target, binary) = (self.target, self.binary);
        let load_bias = target
            .load_bias(binary.pie, binary.first_segment_vaddr())
            .map_err(|e| target.explain(e))?;
        let facets = watched_facets(args);
        let sched_layout = SchedLayout::new(binary, load_bias);
        let global_runq = sched_layout
            .as_ref()
            .map_or(0, SchedLayout::global_runq_size_address);
        let (registration, windows, uprobes) = self.attach(
            args,
            &facets,
            (global_runq, load_bias),
            sched_layout.as_ref().ok(),
        )?;
        let slot = registration.slot;
        let collector = Collector::new(self.kernel.clone(), slot, args.top)?;
        let hit_cost = self.kernel.hit_cost;
        let header = Header {
            pid: target.pid,
            go_version: binary.build.go_version.clone(),
            facets: facets.clone(),
            execs_followed: self.execs_followed,
            labels: ProcessLabels::read(
                target.pid,
                &self.executable.to_string_lossy(),
                &binary.build.go_version,
            ),
        };
        let sched_note = sched_layout.as_ref().err().map(|e| format!("{e:#}"));
        let sched_layout = sched_layout.ok();
        let goroutines_layout = GoroutinesLayout::new(binary, load_bias);
        if let Err(error) = &goroutines_layout {
            eprintln!("gobpf-sched: no goroutine census: {error:#}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Ctrl-C and SIGTERM are handled from here on, before the user is told.
        let _context = runtime.enter();
        let stop = StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        };
        let outputs = Outputs::open(
            args,
            header,
            sched_note,
            sched_layout.clone().map(|layout| (target.pid, layout)),
            self.record.map(|path| (path, self.shown_as.as_str())),
            &runtime,
            self.node,
        )?;
        // Closes said with --verbose, not over the live screen.
        windows::drive(&windows, args.verbose && !outputs.is_screen())?;
        // Not over the live screen (its title shows the budget and the
        // cost); said once for many processes.
        if !outputs.is_screen() && self.node.is_none() {
            say_hit_cost(args, &hit_cost);
        }
        eprintln!(
            "gobpf-sched: attached to {}, {}: {uprobes} uprobes{} in {} ms.{}",
            self.shown_as,
            binary.build.go_version,
            if facets.contains(&Facet::Preemptions) {
                " + SIGURG tracepoint"
            } else {
                ""
            },
            started.elapsed().as_millis(),
            if self.node.is_some() {
                ""
            } else {
                " Ctrl-C to stop."
            }
        );
        let function_at = |pc: u64| {
            binary
                .function_at(pc.wrapping_sub(load_bias))
                .map(str::to_owned)
        };
        let returns_from = |pc: u64, word: u64| {
            binary
                .function_entry_at(pc.wrapping_sub(load_bias))
                .is_some_and(|(entry, _)| {
                    binary.direct_call_target(word.wrapping_sub(load_bias)) == Some(entry)
                })
        };
        if let Some(release) = release {
            release()?;
        }
        let cpu_at_attach = target.cpu_time_ns().unwrap_or(0);
        let attached_at = Instant::now();
        // The windows may be older than this process's watching (the probes
        // of its executable, shared): what came before is not its.
        let (probes_on_before, windows_before) = {
            let windows = lock(&windows);
            // A window open now counts as one of this process's.
            let open_now = u64::from(windows.is_open());
            (
                windows.on_time(attached_at),
                windows.count().saturating_sub(open_now),
            )
        };
        let transition_programs = lock(&windows).transition_programs();
        let mut session = Session {
            args,
            node: self.node,
            target,
            windows,
            probes_on_before,
            windows_before,
            cpu_at_attach: Some(cpu_at_attach),
            first_mark: None,
            collector,
            sched_layout,
            goroutines_layout: goroutines_layout.ok(),
            census: CensusTaker::default(),
            census_every: 1,
            intervals: 0,
            first_sched: None,
            last_census: None,
            names: Names {
                reasons: &binary.wait_reasons,
                function_at: &function_at,
                returns_from: &returns_from,
            },
            outputs,
            clock: Clock::measure(),
            signals: SignalPairing::default(),
            attached_at,
            transition_programs,
            kernel: self.kernel.clone(),
            slot,
            samples_total: NamedSamples::default(),
            exact_blame: ExactBlame::default(),
            blames_exactly: blames_exactly(&facets),
            functions: {
                // Read now too: the last samples are named after the target
                // is gone.
                let mut functions = FunctionNames::default();
                functions.set_mappings(target.code_mappings());
                functions
            },
        };
        let started_unix_ns =
            session.clock.now_unix_ns() - session.attached_at.elapsed().as_nanos() as u64;
        let result = runtime.block_on(session.run(stop));
        // Detach before printing the end of the session.
        let Session {
            outputs,
            samples_total,
            attached_at,
            windows,
            ..
        } = session;
        // The probes go with the last process of their executable; the slot
        // is emptied once the profiles are read.
        lock(&windows).leave(target.pid);
        drop(windows);
        let _registration = registration;
        let end = self.finish(outputs.close(), result?)?;
        if let Some(path) = self.block_profile
            && let Some(sites) = self.kernel.with_block_stacks(|stacks| stacks.read(slot))
        {
            let (parks, places) = self.write_block_profile(
                path,
                sites,
                load_bias,
                started_unix_ns,
                attached_at.elapsed(),
            )?;
            eprintln!(
                "gobpf-sched: wrote {parks} parks at {places} places to {} (go tool pprof {})",
                path.display(),
                path.display()
            );
        }
        if let Some(path) = self.pprof
            && self.kernel.sample_period_ns > 0
        {
            let written = self.write_pprof(
                path,
                &samples_total,
                self.kernel.sample_period_ns,
                load_bias,
                started_unix_ns,
                attached_at.elapsed(),
            )?;
            eprintln!(
                "gobpf-sched: wrote {written} CPU samples to {} (go tool pprof {})",
                path.display(),
                path.display()
            );
        }
        Ok(end)
    }

    /// Writes where goroutines parked as a pprof block profile; returns the
    /// parks and the places.
    fn write_block_profile(
        &self,
        path: &Path,
        sites: Vec<BlockSite>,
        load_bias: u64,
        started_unix_ns: u64,
        duration: Duration,
    ) -> Result<(u64, usize)> {
        let lines = self.binary.source_lines()?;
        let parks = sites.iter().map(|s| s.counts.count).sum();
        let samples: Vec<ProfileSample> = sites
            .iter()
            .map(|site| ProfileSample {
                stack: site
                    .stack
                    .iter()
                    .map(|pc| pc.wrapping_sub(load_bias))
                    .collect(),
                values: vec![site.counts.count as i64, site.counts.blocked_ns as i64],
                labels: vec![(
                    "reason".to_owned(),
                    names::reason_name(&self.binary.wait_reasons, u64::from(site.reason)),
                )],
                num_labels: Vec::new(),
            })
            .collect();
        let spec = ProfileSpec {
            // The names of Go's own block profile.
            sample_types: &[("contentions", "count"), ("delay", "nanoseconds")],
            period_type: ("contentions", "count"),
            period: 1,
            time_nanos: started_unix_ns as i64,
            duration_nanos: duration.as_nanos() as i64,
            comments: vec![format!(
                "gobpf-sched: where the goroutines of {} parked, and for how long",
                self.shown_as
            )],
            executable: Some(&self.executable),
        };
        pprof::write(path, &spec, &samples, self.binary, &lines)
            .with_context(|| format!("cannot write the block profile {}", path.display()))?;
        Ok((parks, sites.len()))
    }

    /// Writes the CPU samples as a pprof profile; returns how many.
    fn write_pprof(
        &self,
        path: &Path,
        samples: &NamedSamples,
        period_ns: u64,
        load_bias: u64,
        started_unix_ns: u64,
        duration: Duration,
    ) -> Result<u64> {
        let lines = self.binary.source_lines()?;
        let mut written = 0;
        let profile_samples: Vec<ProfileSample> = samples
            .sites
            .iter()
            .map(|(site, counts)| {
                written += counts.samples;
                let mut labels = vec![("start_function".to_owned(), site.holder.clone())];
                if site.flags & sample_flags::IN_KERNEL != 0 {
                    labels.push(("in_kernel".to_owned(), "true".to_owned()));
                }
                ProfileSample {
                    stack: site
                        .stack
                        .iter()
                        .map(|pc| pc.wrapping_sub(load_bias))
                        .collect(),
                    values: vec![counts.samples as i64, (counts.samples * period_ns) as i64],
                    labels,
                    num_labels: if site.goid == 0 {
                        Vec::new()
                    } else {
                        vec![("goid".to_owned(), site.goid as i64, String::new())]
                    },
                }
            })
            .collect();
        let spec = ProfileSpec {
            sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
            period_type: ("cpu", "nanoseconds"),
            period: period_ns as i64,
            time_nanos: started_unix_ns as i64,
            duration_nanos: duration.as_nanos() as i64,
            comments: vec![format!(
                "gobpf-sched: CPU samples of {} at {} Hz",
                self.shown_as,
                1_000_000_000 / period_ns.max(1)
            )],
            executable: Some(&self.executable),
        };
        pprof::write(path, &spec, &profile_samples, self.binary, &lines)
            .with_context(|| format!("cannot write the profile {}", path.display()))?;
        Ok(written)
    }

    /// Prints how the image ended and its summary; keeps the recording.
    fn finish(&self, closed: Closed, ended: Ended) -> Result<End> {
        match &ended.how {
            How::TargetExited => eprintln!("gobpf-sched: process {} exited", self.target.pid),
            How::Exec(new_exe) => closed.printer.exec(new_exe)?,
            How::Stopped => {}
        }
        closed.printer.summary(
            &ended.total,
            ended.cost.as_ref(),
            ended.runtime.as_ref(),
            ended.cpu.as_ref(),
            ended.duration_ns,
        )?;
        if let (Some(recorder), Some(path)) = (closed.recorder, self.record) {
            let written = format!(
                "{} run slices, {} syscalls, {} parks, {} preemptions",
                recorder.run_slices, recorder.syscall_slices, recorder.parks, recorder.preemptions
            );
            // With many processes, the node keeps the file once all are done.
            if self.node.is_none() {
                recorder.recording().keep()?;
            }
            eprintln!(
                "gobpf-sched: recorded {written} of {} to {}{}",
                self.shown_as,
                path.display(),
                if self.node.is_none() {
                    " (open it in https://ui.perfetto.dev)"
                } else {
                    ""
                }
            );
        }
        if let Some(failure) = closed.recording_failed {
            return Err(failure);
        }
        Ok(match ended.how {
            How::Exec(new_exe) => End::Exec(new_exe),
            How::Stopped | How::TargetExited => End::Done,
        })
    }

    /// Registers the target with the loaded programs and attaches the probes
    /// the facets need (or joins those already attached to its executable,
    /// with `--all`); returns its registration, its windows of probes and how
    /// many uprobes there are.
    /// `global_runq`: run-time address of the global run queue's length (0:
    /// unknown), which the CPU samples read, and the executable's load bias;
    /// `sched`: where the scheduler's counters are, which the budget predicts
    /// a window's cost from.
    fn attach(
        &self,
        args: &AttachArgs,
        facets: &[Facet],
        (global_runq, load_bias): (u64, u64),
        sched: Option<&SchedLayout>,
    ) -> Result<(ProcessSlot, Arc<Mutex<Windows>>, usize)> {
        let (target, binary) = (self.target, self.binary);
        // Reads code from the executable again: the target may be gone by now.
        let plan = probes::plan(binary, facets, self.block_profile.is_some())
            .map_err(|e| target.explain(e))?;
        // A recording covers the first image only.
        let mut stream_events = stream_events(args, facets);
        if self.record.is_none() && !args.events {
            stream_events &= !stream::ALL;
        }
        let config = ProcessConfig {
            facets: facets.to_vec(),
            stream_events,
            global_runq_size: global_runq,
            block_stacks: self.block_profile.is_some(),
        };
        let slot = probes::register(self.kernel, target, binary, &config)
            .map_err(|e| target.explain(e))?;
        let attach = |pid: Option<u32>| -> Result<Windows> {
            let probes = probes::attach(self.kernel, &target.exe, pid, &plan)?;
            Windows::new(probes, args.budget())
        };
        let windows = match self.shared_executable(args) {
            Some(file) => self.kernel.windows_of(file, || attach(None)),
            None => attach(Some(target.pid)).map(|w| Arc::new(Mutex::new(w))),
        }
        .map_err(|e| target.explain(e))?;
        lock(&windows)
            .join(target.clone(), slot.slot, load_bias, sched.cloned())
            .map_err(|e| target.explain(e))?;
        // The first decision, before the target goes on (`run`): probes at
        // once for a program they cost little.
        windows::step(&windows, false).map_err(|e| target.explain(e))?;
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
        Ok((slot, windows, plan.len()))
    }

    /// The executable file (device, inode) whose probes this process shares
    /// with the other processes that run it: with `--all`, where every Go
    /// process of the file is watched (not with `--container`, which may
    /// leave some out: a probe on the file traps in all of them).
    fn shared_executable(&self, args: &AttachArgs) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        if self.node.is_none() || !args.all || !args.container.is_empty() {
            return None;
        }
        let file = std::fs::metadata(&self.target.exe).ok()?;
        Some((file.dev(), file.ino()))
    }
}

/// What the kernel programs stream: every transition for `--events` and
/// `--record`, run starts and ends for the exact blame view.
fn stream_events(args: &AttachArgs, facets: &[Facet]) -> u32 {
    if args.events || args.record.is_some() {
        stream::ALL
    } else if blames_exactly(facets) {
        stream::RUNS
    } else {
        0
    }
}

/// Whether the exact blame view is computed: it needs run starts (the
/// goroutine probe) and ends (the schedule probe), streamed from the kernel.
fn blames_exactly(facets: &[Facet]) -> bool {
    facets.contains(&Facet::Goroutines) && facets.contains(&Facet::Schedule)
}

/// `--only`, sorted and without repeats; everything when not given.
fn watched_facets(args: &AttachArgs) -> Vec<Facet> {
    if args.only.is_empty() {
        return Facet::ALL.to_vec();
    }
    let mut facets = args.only.clone();
    facets.sort();
    facets.dedup();
    facets
}

/// How often the ring buffer is drained (the probes never wake us up).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// ... and with `--events` or `--record`, whose records come thousands a second.
const DRAIN_EVENTS_EVERY: Duration = Duration::from_millis(10);

struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// The loop of one image: what it reads from, how it names, where it reports.
struct Session<'a> {
    args: &'a AttachArgs,
    /// What the sessions of many processes share: its stop flag ends this one.
    node: Option<&'a NodeShared>,
    target: &'a Target,
    /// The probes, attached in windows under the budget (shared with the
    /// other processes of the executable with `--all`) ...
    windows: Arc<Mutex<Windows>>,
    /// ... and how long they had been on, and how many windows opened,
    /// before this process joined them.
    probes_on_before: Duration,
    windows_before: u64,
    /// The target's CPU time at attach.
    cpu_at_attach: Option<u64>,
    /// The counters at attach: the start of the whole-run cost.
    first_mark: Option<Mark>,
    collector: Collector,
    sched_layout: Option<SchedLayout>,
    goroutines_layout: Option<GoroutinesLayout>,
    census: CensusTaker,
    /// The census is taken every this many intervals (more than 1 when reading
    /// every goroutine takes longer than `CENSUS_SHARE` of an interval).
    census_every: u64,
    intervals: u64,
    /// The scheduler state read at attach: the start of the whole-run view.
    first_sched: Option<(SchedState, Instant)>,
    last_census: Option<Census>,
    names: Names<'a>,
    outputs: Outputs,
    clock: Clock,
    signals: SignalPairing,
    attached_at: Instant,
    /// The loaded programs (for the CPU samples) and this process's slot.
    kernel: Arc<Kernel>,
    /// The transition probes' programs, whose run time says what a hit costs.
    transition_programs: Vec<&'static str>,
    slot: u32,
    /// Every CPU sample of the run, named.
    samples_total: NamedSamples,
    functions: FunctionNames,
    /// Who held the Ps during run-queue waits, from the transitions, when
    /// `blames_exactly`.
    exact_blame: ExactBlame,
    blames_exactly: bool,
}

impl Session<'_> {
    /// Runs until a stop; returns the whole-run totals.
    async fn run(&mut self, mut stop: StopSignals) -> Result<Ended> {
        let deadline = self
            .args
            .duration
            .map(|d| tokio::time::Instant::from_std(self.attached_at + d));
        let mut drain = tokio::time::interval(if self.args.events || self.args.record.is_some() {
            DRAIN_EVENTS_EVERY
        } else {
            DRAIN_EVERY
        });
        let mut report = tokio::time::interval(self.args.interval);
        report.tick().await; // the first tick is immediate
        let sched = self.read_sched();
        let mut previous = Mark {
            snapshot: Snapshot::default(),
            at: self.attached_at,
            sched: sched.clone(),
            probes_on: Duration::ZERO,
            target_cpu_ns: self.cpu_at_attach,
            program_run: None,
            detach_traps: 0,
        };
        self.first_sched = sched.clone().map(|state| (state, Instant::now()));
        self.first_mark = Some(previous.clone());
        self.outputs.first_screen(sched)?;
        let how = loop {
            tokio::select! {
                // A program started by `run` decides itself whether a
                // signal ends it; the watching goes on until it exits.
                _ = stop.interrupt.recv() => {
                    if !self.args.running_command {
                        break How::Stopped;
                    }
                    if !launch::last_interrupt_from_terminal() {
                        launch::forward(self.target.pid, libc::SIGINT);
                    }
                }
                _ = stop.terminate.recv() => {
                    if !self.args.running_command {
                        break How::Stopped;
                    }
                    launch::forward(self.target.pid, libc::SIGTERM);
                }
                _ = sleep_until(deadline) => break How::Stopped,
                _ = drain.tick() => {
                    self.dispatch(monotonic_now())?;
                    if self.node.is_some_and(NodeShared::stopping) {
                        break How::Stopped;
                    }
                    if let Some(how) = self.ended()? {
                        break how;
                    }
                }
                _ = report.tick() => {
                    self.dispatch(monotonic_now())?;
                    previous = self.report(previous)?;
                }
            }
        };
        self.dispatch(u64::MAX)?;
        if let How::Exec(exe) = &how {
            self.outputs.exec(monotonic_now(), exe);
        }
        let last = self.collector.snapshot()?;
        self.outputs
            .finish_recording(monotonic_now(), &self.names, &last);
        let mut end = self.mark(last.clone(), previous.sched.clone());
        // The target may be gone: its CPU time is then what was read last.
        end.target_cpu_ns = end.target_cpu_ns.or(previous.target_cpu_ns);
        let cost = self.first_mark.as_ref().map(|first| self.cost(first, &end));
        let mut cpu = self.whole_run_samples()?;
        if let Some(cpu) = &mut cpu
            && self.blames_exactly
        {
            self.exact_blame
                .take_interval(u64::MAX, &last.goroutines, &self.names, self.args.top);
            cpu.blame.exact = Some(self.exact_blame.whole_run(self.args.top));
        }
        Ok(Ended {
            cpu,
            total: Stats::between(&Snapshot::default(), &last, &self.names, self.args.top),
            runtime: self.runtime_summary(previous.sched.as_ref()),
            cost,
            duration_ns: self.attached_at.elapsed().as_nanos() as u64,
            how,
        })
    }

    /// `q` on the screen, the target's exit or exec.
    fn ended(&mut self) -> Result<Option<How>> {
        if self.outputs.quit_pressed()? {
            return Ok(Some(How::Stopped));
        }
        if !self.target.is_alive() {
            return Ok(Some(How::TargetExited));
        }
        if self.collector.counters()?[counter::EXECS as usize] > 0 {
            let exe = self
                .target
                .exe_name()
                .unwrap_or_else(|e| format!("? ({e:#})"));
            return Ok(Some(How::Exec(exe)));
        }
        Ok(None)
    }

    /// Hands the drained records to the outputs: each SIGURG once resolved (with
    /// where it landed and what it did, `stats::signals`), every transition as it
    /// comes. `now_ns`: u64::MAX at the end resolves every signal.
    fn dispatch(&mut self, now_ns: u64) -> Result<()> {
        let events: Vec<Event> = self.collector.drain_events();
        // The windows (shared with the other processes of the executable)
        // only while the signals are resolved.
        let preemptions = {
            let windows = lock(&self.windows);
            let watched = |ts: u64| windows.watched(ts);
            self.signals
                .resolve(&events, now_ns, &self.clock, &self.names, &watched)
        };
        for preemption in preemptions {
            self.outputs.preemption(&preemption)?;
        }
        for event in &events {
            self.exact_blame.event(event);
            if !matches!(
                event.kind,
                event_kind::PREEMPT | event_kind::PREEMPT_LANDED | event_kind::GC_SUSPENDED
            ) {
                self.outputs.transition(event, &self.clock, &self.names)?;
            }
        }
        Ok(())
    }

    /// One interval: what changed since `previous` (a snapshot, when it was
    /// taken, the scheduler state then), to every output; returns this
    /// interval's.
    fn report(&mut self, mut previous: Mark) -> Result<Mark> {
        let (before_at, sched_before) = (previous.at, previous.sched.clone());
        let top = self.args.top;
        // No transition probe attached since the last interval, or none hit
        // (a quiet program keeps its probes): the per-goroutine totals cannot
        // have changed; they move over instead of being read again (and no
        // goroutine was active in the interval).
        let hits = |counters: &Counters| counters[counter::PROBE_HITS as usize];
        let mut now = self.collector.snapshot_carrying(Some(HashMap::new()))?;
        let unchanged = self.probes_on(Instant::now()) == previous.probes_on
            || hits(&now.counters) == hits(&previous.snapshot.counters);
        let stats = if unchanged {
            let stats = Stats::between(&previous.snapshot, &now, &self.names, top);
            now.goroutines = std::mem::take(&mut previous.snapshot.goroutines);
            stats
        } else {
            now.goroutines = self.collector.goroutines()?;
            Stats::between(&previous.snapshot, &now, &self.names, top)
        };
        let totals = if self.outputs.need_totals() {
            Stats::between(&Snapshot::default(), &now, &self.names, top)
        } else {
            Stats::default()
        };
        let sched = self.read_sched();
        let interval_ns = before_at.elapsed().as_nanos() as u64;
        let runtime = self.activity(sched_before.as_ref(), sched.as_ref(), interval_ns);
        self.intervals += 1;
        let mut cpu = self.sample_view()?;
        if let Some(cpu) = &mut cpu
            && self.blames_exactly
        {
            cpu.blame.exact = Some(self.exact_blame.take_interval(
                monotonic_now(),
                &now.goroutines,
                &self.names,
                top,
            ));
        }
        let census = if self.intervals.is_multiple_of(self.census_every) {
            self.take_census()
        } else {
            None
        };
        // A failed read (the target exiting) keeps the last state read.
        let mut mark = self.mark(now, sched.clone().or(sched_before));
        mark.target_cpu_ns = mark.target_cpu_ns.or(previous.target_cpu_ns);
        let cost = self.cost(&previous, &mark);
        let report = Report {
            stats: &stats,
            totals: &totals,
            cost: &cost,
            sched: sched.as_ref(),
            runtime: runtime.as_ref(),
            census: census.as_ref(),
            census_every: self.census_every,
            cpu: cpu.as_ref(),
            snapshot: &mark.snapshot,
            unix_ns: self.clock.now_unix_ns(),
            monotonic_ns: monotonic_now(),
            interval_ns,
            elapsed_ns: self.attached_at.elapsed().as_nanos() as u64,
        };
        self.outputs.interval(&report, &self.names)?;
        self.collector.forget_deleted(&mut mark.snapshot);
        // An interval may read thousands of goroutines that exited (an HTTP server
        // starts one per request): give the freed memory back instead of keeping
        // the peak (with it, the soak's RSS stays near its start).
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe { libc::malloc_trim(0) };
        if census.is_some() {
            self.last_census = census;
        }
        Ok(mark)
    }

    /// The CPU samples since the last drain, named and summed up (and
    /// added to the whole run's).
    fn sample_view(&mut self) -> Result<Option<CpuView>> {
        let Some(drained) = self.kernel.drain_samples(self.slot)? else {
            return Ok(None);
        };
        self.functions.set_mappings(self.target.code_mappings());
        let named = NamedSamples::name(&drained, &self.names, &mut self.functions);
        self.samples_total.add(&named);
        Ok(Some(CpuView::of(
            &named,
            self.kernel.sample_period_ns,
            &self.names,
            &mut self.functions,
            self.args.top,
        )))
    }

    /// The CPU samples of the whole run.
    fn whole_run_samples(&mut self) -> Result<Option<CpuView>> {
        // The last samples, since the last interval.
        if self.sample_view()?.is_none() {
            return Ok(None);
        }
        let period_ns = self.kernel.sample_period_ns;
        let mut view = CpuView::of(
            &self.samples_total,
            period_ns,
            &self.names,
            &mut self.functions,
            self.args.top,
        );
        view.sampler_cost = self.kernel.sampler_cost();
        Ok(Some(view))
    }

    /// Where the counters are now.
    fn mark(&self, snapshot: Snapshot, sched: Option<SchedState>) -> Mark {
        let at = Instant::now();
        Mark {
            snapshot,
            at,
            sched,
            probes_on: self.probes_on(at),
            target_cpu_ns: self.target.cpu_time_ns(),
            program_run: self.kernel.program_run_time(&self.transition_programs),
            detach_traps: lock(&self.windows).uncounted_traps(self.target.pid),
        }
    }

    /// What the probes cost between two marks.
    fn cost(&self, from: &Mark, to: &Mark) -> ProbeCost {
        let span = to.at.saturating_duration_since(from.at);
        let probes_on = to.probes_on.saturating_sub(from.probes_on);
        let hits = to.snapshot.counters[counter::PROBE_HITS as usize]
            .saturating_sub(from.snapshot.counters[counter::PROBE_HITS as usize]);
        let detach_traps = to.detach_traps.saturating_sub(from.detach_traps);
        let closing_hits = to.snapshot.counters[counter::CLOSING_HITS as usize]
            .saturating_sub(from.snapshot.counters[counter::CLOSING_HITS as usize]);
        // The programs' own mean run time per hit, where the kernel counts it.
        let program_ns = windows::mean_run_ns(from.program_run, to.program_run)
            .or_else(|| windows::mean_run_ns(None, to.program_run));
        let windows = lock(&self.windows);
        let per_hit_ns = windows.trap_ns() + program_ns.unwrap_or(0.0);
        let target_cpu_ns = match (from.target_cpu_ns, to.target_cpu_ns) {
            (Some(then), Some(now)) => now.saturating_sub(then),
            _ => 0,
        };
        let span_ns = span.as_nanos() as u64;
        ProbeCost {
            mode: if self.args.exact_mode() {
                "exact"
            } else {
                "budget"
            },
            budget: Some(self.args.overhead_budget / 100.0),
            coverage: if span_ns == 0 || !windows.has_windowed() {
                1.0
            } else {
                (probes_on.as_nanos() as f64 / span_ns as f64).min(1.0)
            },
            probes_on_ns: probes_on.as_nanos() as u64,
            span_ns,
            probe_hits: hits,
            per_hit_ns,
            trap_ns: windows.trap_ns(),
            program_ns,
            target_cpu_ns,
            closing_hits,
            detach_traps,
            estimated_overhead: (target_cpu_ns > 0).then(|| {
                let traps = closing_hits + detach_traps;
                (hits.saturating_sub(closing_hits) as f64 * per_hit_ns
                    + traps as f64 * windows.trap_ns())
                    / target_cpu_ns as f64
            }),
            windows: windows.count().saturating_sub(self.windows_before),
            window_open_ns: windows.open_ns,
        }
    }

    /// How long the transition probes were on since this process was
    /// watched, at `at`.
    fn probes_on(&self, at: Instant) -> Duration {
        lock(&self.windows)
            .on_time(at)
            .saturating_sub(self.probes_on_before)
    }

    fn read_sched(&self) -> Option<SchedState> {
        let layout = self.sched_layout.as_ref()?;
        runtime_memory::read(self.target.pid, layout).ok()
    }

    /// The runtime's counters from `before` to `after`.
    fn activity(
        &self,
        before: Option<&SchedState>,
        after: Option<&SchedState>,
        span_ns: u64,
    ) -> Option<RuntimeActivity> {
        let layout = self.sched_layout.as_ref()?;
        Some(RuntimeActivity::between(
            before,
            after?,
            span_ns,
            &layout.missing,
        ))
    }

    /// Reads every goroutine; makes the census rarer when that takes more than
    /// `CENSUS_SHARE` of an interval.
    fn take_census(&mut self) -> Option<Census> {
        let layout = self.goroutines_layout.as_ref()?;
        let started = Instant::now();
        let list = goroutines::read(self.target.pid, layout).ok()?;
        let mut census = self
            .census
            .take(&list, monotonic_now(), &self.names, self.args.top);
        let took = started.elapsed();
        census.read_ns = took.as_nanos() as u64;
        let allowed = self.args.interval.as_secs_f64() * CENSUS_SHARE;
        self.census_every = (took.as_secs_f64() / allowed).ceil().max(1.0) as u64;
        Some(census)
    }

    /// The runtime's view of the whole run and since the process started,
    /// with the last census; `last`: the scheduler state read last.
    fn runtime_summary(&mut self, last: Option<&SchedState>) -> Option<RuntimeSummary> {
        // Read again if the target is still there: the last interval may be old.
        let last = self.read_sched().or_else(|| last.cloned())?;
        let (first, first_at) = self.first_sched.as_ref()?;
        let span_ns = first_at.elapsed().as_nanos() as u64;
        Some(RuntimeSummary {
            whole_run: self.activity(Some(first), Some(&last), span_ns)?,
            since_start: self.activity(None, Some(&last), 0)?,
            census: self.take_census().or_else(|| self.last_census.take()),
        })
    }
}

/// The share of an interval the census may take to read every goroutine.
const CENSUS_SHARE: f64 = 0.01;

/// Where the counters were at one moment: the start of the next interval.
#[derive(Clone)]
struct Mark {
    snapshot: Snapshot,
    at: Instant,
    sched: Option<SchedState>,
    /// Time the transition probes were on since attach.
    probes_on: Duration,
    target_cpu_ns: Option<u64>,
    /// The transition programs' run time and runs (kernel statistics).
    program_run: Option<(Duration, u64)>,
    /// Traps estimated while windows were detached, not in the counters.
    detach_traps: u64,
}

fn monotonic_now() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// How a session ended.
struct Ended {
    /// Whole-run totals.
    total: Stats,
    /// The runtime's own counters.
    runtime: Option<RuntimeSummary>,
    /// What the probes cost over the whole run.
    cost: Option<ProbeCost>,
    /// The CPU samples of the whole run.
    cpu: Option<CpuView>,
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

pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
