//! Loads the embedded kernel programs, configures them for one binary and
//! attaches them to one process.

use std::{
    num::NonZeroU32,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{
        TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use gobpf_sched_common::{
    CONFIG_GLOBAL, COOKIE_AT_STACK_CHECK_JUMP, COOKIE_PREEMPTED_ARGUMENT, Config, stream,
};
use serde::Serialize;

use crate::{
    binary::{
        GoBinary,
        prologue::{self, PROLOGUE_BYTES, Placement},
    },
    facet::Facet,
    sources::calibration::{self, HitCost},
    target::Target,
};

/// The kernel object, built from `observer-ebpf/` by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gobpf-sched-ebpf"));

/// Ring-buffer size with `--events` (the default, for preemptions alone, is set in
/// the kernel object: 256 KiB).
const EVENTS_RING_BYTES: u32 = 32 << 20;

/// ... and when only run starts and ends are streamed (the exact blame view):
/// 100 ms of 80,000 slices a second.
const RUNS_RING_BYTES: u32 = 8 << 20;

/// Go 1.26 moved syscall entry and exit off casgstatus: from then on syscalls
/// need their own probes; before, the casgstatus probe sees them (2 fewer hits
/// per syscall).
pub fn syscalls_from_casgstatus(version: (u32, u32)) -> bool {
    version < (1, 26)
}

/// One uprobe: which kernel program watches which runtime function, and when.
struct Uprobe {
    program: &'static str,
    function: &'static str,
    /// Attached when one of these facets is watched.
    serves: &'static [Facet],
    /// ... and the binary's Go version is one of these.
    versions: fn((u32, u32)) -> bool,
    /// Attach-cookie bits the program reads (besides the probe placement's).
    cookie: u64,
    /// Fires at a rate of scheduling transitions: attached in windows under
    /// the overhead budget. The signal handler and the GC's stack-scan stop
    /// fire per signal and stay attached: every SIGURG is seen landing; what
    /// it did (a preemption, in `goschedImpl`, which every `runtime.Gosched`
    /// also calls, thousands of times a second in some programs) is seen in
    /// windows.
    windowed: bool,
}

fn any_version(_: (u32, u32)) -> bool {
    true
}

fn own_syscall_probes(version: (u32, u32)) -> bool {
    !syscalls_from_casgstatus(version)
}

/// Go 1.22 folded `gopreempt_m` into `goschedImpl(gp, preempted bool)` (and
/// `newstack` inlines it); 1.26 removed `gopreempt_m`.
fn preempted_in_gosched_impl(version: (u32, u32)) -> bool {
    version >= (1, 22)
}

fn preempted_in_gopreempt_m(version: (u32, u32)) -> bool {
    !preempted_in_gosched_impl(version)
}

/// `schedule` ends run slices and counts scheduling rounds; `casgstatus` sees
/// goroutine state changes (parks, wakeups, run starts, creation, exit, and
/// syscalls before Go 1.26); the syscall functions pair syscalls on Go 1.26+;
/// `sigtrampgo`, the Go signal handler, tells where a SIGURG landed; the
/// preemption functions say whether it (or a stack check) preempted a goroutine,
/// and `preemptPark` whether it stopped one for the GC instead. `goyield_m` is
/// the yield of a starving semaphore's handoff (the world restarting, a contended
/// `sync.Mutex`), which runtime/trace also records as "preempted".
const UPROBES: &[Uprobe] = &[
    Uprobe {
        program: "go_schedule",
        function: "runtime.schedule",
        serves: &[Facet::Schedule],
        versions: any_version,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_casgstatus",
        function: "runtime.casgstatus",
        serves: &[Facet::Goroutines],
        versions: any_version,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_casgstatus",
        function: "runtime.casgstatus",
        serves: &[Facet::Syscalls],
        versions: syscalls_from_casgstatus,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_entersyscall",
        function: "runtime.entersyscall",
        serves: &[Facet::Syscalls],
        versions: own_syscall_probes,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_entersyscall",
        function: "runtime.entersyscallblock",
        serves: &[Facet::Syscalls],
        versions: own_syscall_probes,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_exitsyscall",
        function: "runtime.exitsyscall",
        serves: &[Facet::Syscalls],
        versions: own_syscall_probes,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_sigtrampgo",
        function: "runtime.sigtrampgo",
        serves: &[Facet::Preemptions],
        versions: any_version,
        windowed: false,
        cookie: 0,
    },
    Uprobe {
        program: "go_preempted",
        function: "runtime.gopreempt_m",
        serves: &[Facet::Preemptions],
        versions: preempted_in_gopreempt_m,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_preempted",
        function: "runtime.goschedImpl",
        serves: &[Facet::Preemptions],
        versions: preempted_in_gosched_impl,
        windowed: true,
        cookie: COOKIE_PREEMPTED_ARGUMENT,
    },
    Uprobe {
        program: "go_preempted",
        function: "runtime.goyield_m",
        serves: &[Facet::Preemptions],
        versions: any_version,
        windowed: true,
        cookie: 0,
    },
    Uprobe {
        program: "go_preempt_park",
        function: "runtime.preemptPark",
        serves: &[Facet::Preemptions],
        versions: any_version,
        windowed: false,
        cookie: 0,
    },
];

/// The stacks of parks, for the block profile: only when asked (each park
/// then walks its stack, ~1 µs).
const BLOCK_STACK_PROBE: Uprobe = Uprobe {
    program: "go_gopark",
    function: "runtime.gopark",
    serves: &[Facet::Goroutines],
    versions: any_version,
    windowed: true,
    cookie: 0,
};

/// Where one uprobe goes.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedProbe {
    /// The kernel program.
    #[serde(skip)]
    pub program: &'static str,
    pub function: &'static str,
    /// Link-time address of the function.
    pub address: u64,
    /// Where the probe sits: bytes after the function's start, and why there.
    pub site_offset: u64,
    pub placement: Placement,
    /// File offset of the probe site (what the kernel attaches to).
    pub file_offset: u64,
    /// The attach cookie: the placement's bit and the program's own.
    #[serde(skip)]
    pub cookie: u64,
    /// Attached in windows (a transition probe), or all the time.
    pub windowed: bool,
}

/// Finds the functions the watched facets need, and their probe sites;
/// `block_stacks`: also where goroutines park (the block profile).
pub fn plan(binary: &GoBinary, facets: &[Facet], block_stacks: bool) -> Result<Vec<PlannedProbe>> {
    let mut wanted: Vec<&Uprobe> = Vec::new();
    let extra = block_stacks.then_some(&BLOCK_STACK_PROBE);
    for probe in UPROBES.iter().chain(extra) {
        let needed = probe.serves.iter().any(|f| facets.contains(f))
            && (probe.versions)(binary.version)
            && !wanted
                .iter()
                .any(|w| (w.program, w.function) == (probe.program, probe.function));
        if needed {
            wanted.push(probe);
        }
    }
    wanted
        .into_iter()
        .map(
            |uprobe @ &Uprobe {
                 program,
                 function,
                 cookie,
                 ..
             }| {
                let address = binary
                    .function(function)
                    .with_context(|| format!("the binary has no {function}"))?;
                let site = prologue::probe_site(&binary.code(address, PROLOGUE_BYTES)?);
                let file_offset = binary
                    .file_offset(address + site.offset)
                    .with_context(|| format!("{function} at {address:#x} is not in the file"))?;
                Ok(PlannedProbe {
                    program,
                    function,
                    address,
                    site_offset: site.offset,
                    placement: site.placement,
                    file_offset,
                    cookie: cookie
                        | match site.placement {
                            Placement::StackCheckJump => COOKIE_AT_STACK_CHECK_JUMP,
                            Placement::Entry => 0,
                        },
                    windowed: uprobe.windowed,
                })
            },
        )
        .collect()
}

/// Loaded and attached programs. Dropping it detaches everything; so does the
/// process dying, since every link is owned by a file descriptor.
pub struct Probes {
    pub ebpf: Ebpf,
    /// The transition probes, attached in windows: their links while attached.
    windowed: Vec<(PlannedProbe, Option<UProbeLinkId>)>,
    exe: PathBuf,
    pid: NonZeroU32,
    /// Holding it keeps the kernel's run-time statistics of BPF programs on
    /// (what the programs themselves cost per hit); None when refused.
    _stats: Option<OwnedFd>,
    /// What a uprobe hit costs here, measured before attaching.
    pub hit_cost: HitCost,
    /// When the probes were attached (the first window opened).
    pub attached_at: Instant,
}

impl Probes {
    /// Whether the transition probes are attached.
    pub fn window_open(&self) -> bool {
        self.windowed.iter().any(|(_, link)| link.is_some())
    }

    /// Whether there are transition probes at all.
    pub fn has_windowed(&self) -> bool {
        !self.windowed.is_empty()
    }

    /// Attaches the transition probes; what they record from now on starts at
    /// `start_ns` (CLOCK_MONOTONIC): state from earlier windows gives no duration.
    pub fn open_window(&mut self, start_ns: u64) -> Result<()> {
        self.set_window_start(start_ns)?;
        for (probe, link) in &mut self.windowed {
            if link.is_some() {
                continue;
            }
            let program: &mut UProbe = self
                .ebpf
                .program_mut(probe.program)
                .with_context(|| format!("the eBPF object has no program {}", probe.program))?
                .try_into()?;
            *link = Some(attach_uprobe(program, probe, &self.exe, self.pid)?);
        }
        Ok(())
    }

    /// What the kernel programs take as the start of the current window.
    fn set_window_start(&mut self, start_ns: u64) -> Result<()> {
        let mut window: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut("WINDOW")
                .context("the eBPF object has no WINDOW map")?,
        )?;
        window.set(0, start_ns, 0)?;
        Ok(())
    }

    /// Detaches the transition probes: the kernel puts the original
    /// instructions back at their sites; the programs stay loaded. Each
    /// detach waits for the kernel to be done with the probe (tens of ms): the
    /// links are dropped in parallel.
    pub fn close_window(&mut self) -> Result<()> {
        // From now on no state gives a duration, nor tells what runs on a
        // thread: the probes are about to miss what happens.
        self.set_window_start(u64::MAX)?;
        let mut links = Vec::with_capacity(self.windowed.len());
        for (probe, link) in &mut self.windowed {
            let Some(id) = link.take() else { continue };
            let program: &mut UProbe = self
                .ebpf
                .program_mut(probe.program)
                .with_context(|| format!("the eBPF object has no program {}", probe.program))?
                .try_into()?;
            links.push(
                program
                    .take_link(id)
                    .with_context(|| format!("cannot detach the uprobe on {}", probe.function))?,
            );
        }
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        Ok(())
    }

    /// What the transition programs have run in all (time, runs), by the
    /// kernel's statistics; None when they are off.
    pub fn program_run_time(&self) -> Option<(Duration, u64)> {
        self._stats.as_ref()?;
        let mut names: Vec<&str> = self.windowed.iter().map(|(p, _)| p.program).collect();
        names.sort_unstable();
        names.dedup();
        let mut total = (Duration::ZERO, 0);
        for name in names {
            let program: &UProbe = self.ebpf.program(name)?.try_into().ok()?;
            let info = program.info().ok()?;
            total.0 += info.run_time();
            total.1 += info.run_count();
        }
        Some(total)
    }
}

/// Attaches `program` at `probe`'s site in `exe`, for process `pid` only.
fn attach_uprobe(
    program: &mut UProbe,
    probe: &PlannedProbe,
    exe: &Path,
    pid: NonZeroU32,
) -> Result<UProbeLinkId> {
    program
        .attach(
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(probe.file_offset),
                cookie: Some(probe.cookie),
            },
            exe,
            UProbeScope::OneProcess(pid),
        )
        .with_context(|| format!("cannot attach a uprobe to {}", probe.function))
}

pub fn attach(
    target: &Target,
    binary: &GoBinary,
    plan: &[PlannedProbe],
    facets: &[Facet],
    signal_offsets: (u32, u32),
    stream_events: u32,
    global_runq_size: u64,
) -> Result<Probes> {
    let block_stacks = plan.iter().any(|p| p.program == BLOCK_STACK_PROBE.program);
    let pid_namespace = target.pid_namespace()?;
    let config = Config {
        target_tgid: target.pid,
        signal_sig_offset: signal_offsets.0,
        signal_pid_offset: signal_offsets.1,
        stream_events,
        syscalls_from_casgstatus: u32::from(
            facets.contains(&Facet::Syscalls) && syscalls_from_casgstatus(binary.version),
        ),
        schedule_probed: u32::from(facets.contains(&Facet::Schedule)),
        block_stacks: u32::from(block_stacks),
        _pad: 0,
        pidns_dev: pid_namespace.map_or(0, |ns| ns.0),
        pidns_ino: pid_namespace.map_or(0, |ns| ns.1),
        global_runq_size,
        offsets: binary.offsets,
    };
    let mut loader = EbpfLoader::new();
    if stream_events & stream::ALL != 0 {
        // Every transition is a record: room for a burst between two drains.
        loader.map_max_entries("EVENTS", EVENTS_RING_BYTES);
    } else if stream_events & stream::RUNS != 0 {
        // Two records per run slice, drained every 100 ms.
        loader.map_max_entries("EVENTS", RUNS_RING_BYTES);
    }
    let mut ebpf = loader
        .override_global(CONFIG_GLOBAL, &config, true)
        .load(EBPF_OBJECT)
        .context(
            "the kernel refused the eBPF programs (is BPF enabled, and does this process \
             have CAP_BPF and CAP_PERFMON, e.g. as root outside a user namespace?)",
        )?;

    let hit_cost = calibration::measure(&mut ebpf)?;
    let pid = NonZeroU32::new(target.pid).context("pid 0 cannot be traced")?;
    let mut windowed = Vec::new();
    for probe in plan {
        let program: &mut UProbe = ebpf
            .program_mut(probe.program)
            .with_context(|| format!("the eBPF object has no program {}", probe.program))?
            .try_into()?;
        if program.fd().is_err() {
            program
                .load()
                .with_context(|| format!("the verifier rejected {}", probe.program))?;
        }
        let link = attach_uprobe(program, probe, &target.exe, pid)?;
        if probe.windowed {
            windowed.push((probe.clone(), Some(link)));
        }
    }

    let attached_at = Instant::now();
    // Always: an exec replaces what every probe is attached to.
    attach_tracepoint(&mut ebpf, "process_exec", "sched", "sched_process_exec")?;
    if facets.contains(&Facet::Preemptions) {
        attach_tracepoint(&mut ebpf, "signal_generate", "signal", "signal_generate")?;
    }
    Ok(Probes {
        ebpf,
        windowed,
        exe: target.exe.clone(),
        pid,
        _stats: aya::sys::enable_stats(aya::sys::Stats::RunTime).ok(),
        hit_cost,
        attached_at,
    })
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("the eBPF object has no program {program}"))?
        .try_into()?;
    tracepoint
        .load()
        .with_context(|| format!("the verifier rejected {program}"))?;
    tracepoint
        .attach(category, name)
        .with_context(|| format!("cannot attach to the {category}:{name} tracepoint"))?;
    Ok(())
}
