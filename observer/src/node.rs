//! `attach --all` (and several `--pid`s): many Go processes watched side by
//! side with one loaded set of kernel programs. The processes running at
//! start are found in `/proc`; later ones at their exec
//! (`sched:sched_process_exec`, within a drain of the ring buffer). Each
//! watched process has a session of its own on a thread of its own (its
//! windows, budget, outputs and final summary, as with one `--pid`); what
//! they share is here: the stop, where the lines go, the metrics server.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::BufRead,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::Path,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    binary::GoBinary,
    outputs::{
        Outputs,
        lines::Sink,
        perfetto::Recording,
        prometheus::MetricsServer,
        screen::{Key, NodeTui, SharedScreens},
    },
    session::{self, AttachArgs},
    sources::kernel::Kernel,
    target::{Target, labels},
};

/// What the sessions of many processes share.
pub struct NodeShared {
    /// Set once the whole run stops (Ctrl-C, SIGTERM, `--duration`).
    stop: AtomicBool,
    /// Where every session writes its lines (whole reports at a time).
    pub sink: Sink,
    /// The one `/metrics` server, every process's series labelled.
    pub metrics: Option<MetricsServer>,
    /// The screens of the processes, when the live screen is up.
    pub screens: Option<SharedScreens>,
    /// `--record`: one file, a process track group per process.
    pub recording: Option<Recording>,
    /// The executables parsed, by file (device, inode, size, mtime), while a
    /// session uses them.
    binaries: Mutex<HashMap<FileIdentity, Weak<GoBinary>>>,
}

impl NodeShared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The executable at `path`, parsed once for every process that runs it
    /// (a parse reads the whole file: tens of MB, tens of ms). One parse at
    /// a time: 50 processes starting at once do not hold 50 files in memory.
    pub fn binary(&self, path: &Path, shown_as: &str) -> Result<Arc<GoBinary>> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::metadata(path).with_context(|| format!("cannot read {shown_as}"))?;
        let key = (file.dev(), file.ino(), file.size(), file.mtime_nsec());
        let mut binaries = self.binaries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(binary) = binaries.get(&key).and_then(Weak::upgrade) {
            return Ok(binary);
        }
        binaries.retain(|_, binary| binary.strong_count() > 0);
        let binary = Arc::new(GoBinary::open(path, shown_as)?);
        binaries.insert(key, Arc::downgrade(&binary));
        Ok(binary)
    }
}

/// A file as (device, inode, size, mtime): another file, or the same one
/// rewritten, is another executable.
type FileIdentity = (u64, u64, u64, i64);

/// How often new processes are looked for (their exec records drained).
const DISCOVER_EVERY: Duration = Duration::from_millis(200);

/// Which processes to watch.
struct Selection<'a> {
    /// `--pid`s: each is said when it cannot be watched.
    pids: &'a [u32],
    /// `--all`: every Go process (but the filters').
    all: bool,
    exes: &'a [String],
    containers: &'a [String],
}

/// What became of the processes looked at.
#[derive(Default)]
struct Tally {
    /// The sessions, each on its thread: true when it watched to its end.
    watching: HashMap<u32, JoinHandle<bool>>,
    /// Processes looked at once already: not looked at again until they
    /// exec (a new process has exec'd, or is a fork of one seen).
    seen: HashSet<u32>,
    not_go: u64,
    filtered_out: u64,
    /// Go processes that could not be watched (said each with its reason).
    refused: u64,
    /// Sessions that watched their process to its end (or the stop).
    ended: u64,
}

pub fn run(args: &AttachArgs) -> Result<()> {
    refuse_single_process_options(args)?;
    let signal_offsets = session::check_machine(args)?;
    let started = Instant::now();
    let kernel = Arc::new(session::load_kernel(args, signal_offsets, args.all)?);
    session::say_hit_cost(args, &kernel.hit_cost);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = match args.prometheus {
        Some(address) => {
            let server = runtime.block_on(MetricsServer::start(address, true))?;
            eprintln!(
                "gobpf-sched: Prometheus metrics on http://{}/metrics",
                server.address
            );
            Some(server)
        }
        None => None,
    };
    // The live screen: a process list; meanwhile the summaries of processes
    // that end wait for it to go.
    let deferred = Arc::new(Mutex::new(Vec::new()));
    let wants_screen = Outputs::wants_screen(args);
    let shared = Arc::new(NodeShared {
        stop: AtomicBool::new(false),
        sink: if wants_screen {
            Sink::Deferred(deferred.clone())
        } else {
            Sink::open(args)?
        },
        metrics,
        screens: wants_screen.then(SharedScreens::default),
        recording: match &args.record {
            Some(path) => Some(Recording::create(path, args.force)?),
            None => None,
        },
        binaries: Mutex::default(),
    });
    let mut screen = match &shared.screens {
        Some(screens) => Some(NodeScreen::start(screens.clone(), deferred)?),
        None => None,
    };
    let selection = Selection {
        pids: &args.pid,
        all: args.all,
        exes: &args.exe,
        containers: &args.container,
    };
    let mut tally = Tally::default();
    let candidates: Vec<u32> = if args.all {
        running_processes()?
    } else {
        args.pid.clone()
    };
    for pid in candidates {
        consider(pid, &selection, &mut tally, args, &kernel, &shared);
    }
    eprintln!(
        "gobpf-sched: watching {} Go processes (loaded in {} ms){}. Ctrl-C to stop.",
        tally.watching.len(),
        started.elapsed().as_millis(),
        if args.all {
            ", and each one started from now on"
        } else {
            ""
        }
    );
    let _context = runtime.enter();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    runtime.block_on(async {
        let mut tick = tokio::time::interval(DISCOVER_EVERY);
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = session::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    if let Some(screen) = &mut screen {
                        if matches!(screen.tui.keys(), Ok(Key::Quit) | Err(_)) {
                            break;
                        }
                        let _ = screen.tui.draw();
                    }
                    for pid in kernel.new_processes() {
                        // An exec makes a process worth a new look.
                        tally.seen.remove(&pid);
                        consider(pid, &selection, &mut tally, args, &kernel, &shared);
                    }
                    reap(&mut tally, false);
                    // Only given pids, all gone: nothing is left to watch.
                    if !args.all && tally.watching.is_empty() {
                        break;
                    }
                }
            }
        }
    });
    shared.stop.store(true, Ordering::Relaxed);
    // Each session prints its whole-run summary as it ends.
    reap(&mut tally, true);
    if let Some(recording) = &shared.recording {
        recording.keep()?;
        eprintln!(
            "gobpf-sched: the recording of every process is {} (open it in \
             https://ui.perfetto.dev: a process track group each)",
            recording.path().display()
        );
    }
    if let Some(screen) = screen {
        screen.close(args)?;
    }
    eprintln!(
        "gobpf-sched: {} processes watched; skipped: {} not Go, {} not selected, {} that \
         could not be watched",
        tally.ended, tally.not_go, tally.filtered_out, tally.refused
    );
    Ok(())
}

/// The options that name one process's files, or take over the terminal.
fn refuse_single_process_options(args: &AttachArgs) -> Result<()> {
    let one_file = [
        ("--pprof", args.pprof.is_some()),
        ("--block-profile", args.block_profile.is_some()),
    ];
    for (flag, given) in one_file {
        if given {
            anyhow::bail!(
                "{flag} writes one process's file: use it with a single --pid, not with \
                 --all or several pids"
            );
        }
    }
    if args.events {
        anyhow::bail!(
            "--events prints every transition of one process: use it with a single --pid"
        );
    }
    Ok(())
}

/// Looks at `pid`: watches it on a thread of its own if it is a Go process
/// `selection` picks; otherwise counts why not (said only for given pids).
fn consider(
    pid: u32,
    selection: &Selection<'_>,
    tally: &mut Tally,
    args: &AttachArgs,
    kernel: &Arc<Kernel>,
    shared: &Arc<NodeShared>,
) {
    if pid == std::process::id() || tally.watching.contains_key(&pid) || !tally.seen.insert(pid) {
        return;
    }
    let given = selection.pids.contains(&pid);
    let target = match Target::find(pid) {
        Ok(target) => target,
        // Gone already, or a kernel thread (no executable).
        Err(error) => {
            if given {
                eprintln!("gobpf-sched: not watching process {pid}: {error:#}");
                tally.refused += 1;
            }
            return;
        }
    };
    if !given && !GoBinary::looks_like_go(&target.exe) {
        tally.not_go += 1;
        return;
    }
    if !given && !selection.picks(&target) {
        tally.filtered_out += 1;
        return;
    }
    let (args, kernel, shared) = (args.clone(), kernel.clone(), shared.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("watch-{pid}"))
        .spawn(move || {
            let shown_as = format!(
                "process {pid} ({})",
                target.exe_name().unwrap_or_else(|_| "?".to_owned())
            );
            let watched =
                session::follow(&args, target, Instant::now(), None, &kernel, Some(&shared));
            if let Err(error) = &watched {
                eprintln!("gobpf-sched: not watching {shown_as}: {error:#}");
            }
            watched.is_ok()
        });
    match spawned {
        Ok(handle) => {
            tally.watching.insert(pid, handle);
        }
        Err(error) => {
            eprintln!("gobpf-sched: not watching process {pid}: cannot start a thread: {error}");
            tally.refused += 1;
        }
    }
}

impl Selection<'_> {
    /// Whether the filters (`--exe`, `--container`) keep `target`.
    fn picks(&self, target: &Target) -> bool {
        if !self.all {
            return false;
        }
        let exe_ok = self.exes.is_empty()
            || target
                .exe_name()
                .is_ok_and(|name| self.exes.iter().any(|exe| Path::new(&name).ends_with(exe)));
        let container_ok = self.containers.is_empty() || {
            let cgroup =
                std::fs::read_to_string(format!("/proc/{}/cgroup", target.pid)).unwrap_or_default();
            labels::container_of(&cgroup).id.is_some_and(|id| {
                self.containers
                    .iter()
                    .any(|wanted| !wanted.is_empty() && id.starts_with(wanted.as_str()))
            })
        };
        exe_ok && container_ok
    }
}

/// Joins the sessions that ended (all of them with `all`, once stopped).
fn reap(tally: &mut Tally, all: bool) {
    let ended: Vec<u32> = tally
        .watching
        .iter()
        .filter(|(_, handle)| all || handle.is_finished())
        .map(|(pid, _)| *pid)
        .collect();
    for pid in ended {
        if let Some(handle) = tally.watching.remove(&pid) {
            match handle.join() {
                Ok(true) => tally.ended += 1,
                _ => tally.refused += 1,
            }
        }
    }
}

/// The pids of `/proc`.
fn running_processes() -> Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .context("cannot list /proc")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The process list on the terminal, and what waits for it to go: the
/// sessions' stderr (shown under the list meanwhile) and the summaries of
/// processes that ended.
struct NodeScreen {
    tui: NodeTui,
    captured: StderrCapture,
    deferred: Arc<Mutex<Vec<String>>>,
}

impl NodeScreen {
    fn start(screens: SharedScreens, deferred: Arc<Mutex<Vec<String>>>) -> Result<Self> {
        let captured = StderrCapture::start()?;
        Ok(Self {
            tui: NodeTui::start(screens, captured.lines.clone())?,
            captured,
            deferred,
        })
    }

    /// Gives the terminal back, then prints what waited (to stderr, and the
    /// summaries where `args` send the reports).
    fn close(self, args: &AttachArgs) -> Result<()> {
        let Self {
            tui,
            captured,
            deferred,
        } = self;
        drop(tui);
        drop(captured);
        let out = Sink::open(args)?;
        for text in std::mem::take(&mut *deferred.lock().unwrap_or_else(|e| e.into_inner())) {
            out.write(&text)?;
        }
        Ok(())
    }
}

/// stderr sent to a pipe while the screen is up: each line kept for the
/// screen's message panel; printed to the real stderr when dropped.
struct StderrCapture {
    lines: Arc<Mutex<VecDeque<String>>>,
    /// The real stderr, to put back.
    saved: OwnedFd,
    reader: Option<JoinHandle<()>>,
}

/// Lines of stderr the screen keeps.
const MESSAGES_KEPT: usize = 1000;

impl StderrCapture {
    fn start() -> Result<Self> {
        let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
        let (read, write) = std::io::pipe()?;
        // SAFETY: dup2 onto fd 2 of a pipe end we own; the old stderr is kept
        // in `saved`.
        if unsafe { libc::dup2(write.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot capture stderr");
        }
        drop(write);
        let lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(read).lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.push_back(line);
                if kept.len() > MESSAGES_KEPT {
                    kept.pop_front();
                }
            }
        });
        Ok(Self {
            lines,
            saved,
            reader: Some(reader),
        })
    }
}

impl Drop for StderrCapture {
    fn drop(&mut self) {
        // SAFETY: puts the real stderr back on fd 2; the pipe's last writer
        // closes with it, which ends the reader.
        unsafe { libc::dup2(self.saved.as_raw_fd(), libc::STDERR_FILENO) };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        for line in self.lines.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            eprintln!("{line}");
        }
    }
}
