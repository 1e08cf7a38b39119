//! Which uprobes a binary needs, and attaching them to one process (the
//! programs are loaded once for every process: `kernel`).

use std::{
    num::NonZeroU32,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeLinkId, UProbeScope},
    },
};
use gobpf_sched_common::{COOKIE_AT_STACK_CHECK_JUMP, COOKIE_PREEMPTED_ARGUMENT, Config};
use serde::Serialize;

use crate::{
    binary::{
        GoBinary,
        prologue::{self, PROLOGUE_BYTES, Placement},
    },
    facet::Facet,
    sources::{calibration::HitCost, kernel::Kernel},
    target::Target,
};

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

/// The uprobes of one executable, on the programs loaded for every process:
/// for one process, or for every process that runs the file (`--all`).
/// Dropping it detaches them (every link is owned by a file descriptor, so
/// the observer's death does too).
pub struct Probes {
    pub kernel: Arc<Kernel>,
    /// The transition probes, attached in windows ...
    windowed: Vec<PlannedProbe>,
    /// ... the open window's links (none: closed).
    window: Vec<WindowLink>,
    /// Each process's window start, as the programs read it (a handle of
    /// its own: setting it does not wait for the loaded programs' lock).
    window_starts: Array<MapData, u64>,
    /// The probes attached all the time (until the executable is let go).
    fixed: Vec<(&'static str, UProbeLinkId)>,
    exe: PathBuf,
    /// The one process they trap in; None: every process of the file.
    pid: Option<NonZeroU32>,
    /// What a uprobe hit costs here, measured when the programs were loaded.
    pub hit_cost: HitCost,
}

/// A link of an open window: one program's.
enum WindowLink {
    /// At every site of the program, with one uprobe_multi link.
    Multi { program: &'static str, fd: OwnedFd },
    /// At one site (a perf-event link, held by aya's program).
    PerfEvent {
        program: &'static str,
        site: u64,
        id: UProbeLinkId,
    },
}

impl WindowLink {
    fn program(&self) -> &'static str {
        match self {
            Self::Multi { program, .. } | Self::PerfEvent { program, .. } => program,
        }
    }
}

/// A window's link taken to be detached (dropping it does).
pub enum Detachable {
    Multi(OwnedFd),
    PerfEvent(UProbeLink),
}

/// A window's link to detach, with its program and its sites (link-time
/// addresses).
pub struct TakenLink {
    pub program: &'static str,
    pub sites: Vec<u64>,
    pub link: Detachable,
}

impl Probes {
    /// Whether the transition probes are attached.
    pub fn window_open(&self) -> bool {
        !self.window.is_empty()
    }

    /// Whether there are transition probes at all.
    pub fn has_windowed(&self) -> bool {
        !self.windowed.is_empty()
    }

    /// Attaches the transition probes (those not attached yet, after a
    /// failure): one uprobe_multi link per program, or, where the kernel has
    /// none, one perf-event link per site. What they record for the processes
    /// in `slots` from now on starts at `start_ns` (CLOCK_MONOTONIC): state
    /// from earlier windows gives no duration.
    pub fn open_window(&mut self, slots: &[u32], start_ns: u64) -> Result<()> {
        for &slot in slots {
            self.set_window_start(slot, start_ns)?;
        }
        for program in self.transition_programs() {
            if self.window.iter().any(|link| link.program() == program) {
                continue;
            }
            let sites: Vec<(u64, u64)> = self
                .windowed
                .iter()
                .filter(|probe| probe.program == program)
                .map(|probe| (probe.file_offset, probe.cookie))
                .collect();
            let pid = self.pid.map(NonZeroU32::get);
            match self.kernel.multi_link(program, &self.exe, &sites, pid) {
                Some(fd) => self.window.push(WindowLink::Multi { program, fd: fd? }),
                None => self.open_perf_links(program)?,
            }
        }
        Ok(())
    }

    /// Attaches `program` at each of its sites with a perf-event link.
    fn open_perf_links(&mut self, program: &'static str) -> Result<()> {
        let (exe, pid) = (&self.exe, self.pid);
        self.kernel.with_ebpf(|ebpf| {
            for probe in self.windowed.iter().filter(|p| p.program == program) {
                let site = probe.address + probe.site_offset;
                if self
                    .window
                    .iter()
                    .any(|link| matches!(link, WindowLink::PerfEvent { site: s, .. } if *s == site))
                {
                    continue;
                }
                let id = attach_uprobe(uprobe(ebpf, program)?, probe, exe, pid)?;
                self.window
                    .push(WindowLink::PerfEvent { program, site, id });
            }
            Ok(())
        })
    }

    /// What the kernel programs take as the start of the current window of
    /// the process in `slot`.
    pub fn set_window_start(&mut self, slot: u32, start_ns: u64) -> Result<()> {
        self.window_starts.set(slot, start_ns, 0)?;
        Ok(())
    }

    /// Takes the transition probes' links, to detach (dropping them puts the
    /// original instructions back at their sites; the programs stay loaded).
    pub fn take_window(&mut self, slots: &[u32]) -> Result<Vec<TakenLink>> {
        // From now on no state gives a duration, nor tells what runs on a
        // thread: the probes are about to miss what happens.
        for &slot in slots {
            self.set_window_start(slot, u64::MAX)?;
        }
        let sites_of = |program: &str| -> Vec<u64> {
            self.windowed
                .iter()
                .filter(|probe| probe.program == program)
                .map(|probe| probe.address + probe.site_offset)
                .collect()
        };
        let mut taken = Vec::with_capacity(self.window.len());
        let mut perf_links = Vec::new();
        for link in std::mem::take(&mut self.window) {
            match link {
                WindowLink::Multi { program, fd } => taken.push(TakenLink {
                    program,
                    sites: sites_of(program),
                    link: Detachable::Multi(fd),
                }),
                WindowLink::PerfEvent { program, site, id } => perf_links.push((program, site, id)),
            }
        }
        // aya's links are held by its programs: taken under their lock
        // (which attaching holds for up to ~100 ms: not for uprobe_multi
        // links).
        if !perf_links.is_empty() {
            self.kernel.with_ebpf(|ebpf| {
                for (program, site, id) in perf_links {
                    let link = uprobe(ebpf, program)?
                        .take_link(id)
                        .with_context(|| format!("cannot detach the uprobe of {program}"))?;
                    taken.push(TakenLink {
                        program,
                        sites: vec![site],
                        link: Detachable::PerfEvent(link),
                    });
                }
                anyhow::Ok(())
            })?;
        }
        Ok(taken)
    }

    /// The transition programs (for their run time in the kernel's
    /// statistics: `Kernel::program_run_time`; they serve every watched
    /// process, so that is what a hit costs, in any of them).
    pub fn transition_programs(&self) -> Vec<&'static str> {
        let mut names: Vec<&str> = self.windowed.iter().map(|p| p.program).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        let mut links: Vec<Detachable> = self
            .take_window(&[])
            .unwrap_or_default()
            .into_iter()
            .map(|taken| taken.link)
            .collect();
        self.kernel.with_ebpf(|ebpf| {
            for (program, id) in self.fixed.drain(..) {
                if let Ok(program) = uprobe(ebpf, program)
                    && let Ok(link) = program.take_link(id)
                {
                    links.push(Detachable::PerfEvent(link));
                }
            }
        });
        // Detached in parallel (each waits for the kernel), outside the lock.
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }
}

/// A watched process's registration with the loaded programs (its slot);
/// dropping it lets the slot go.
pub struct ProcessSlot {
    kernel: Arc<Kernel>,
    pid: u32,
    pub slot: u32,
}

impl Drop for ProcessSlot {
    fn drop(&mut self) {
        self.kernel.unregister(self.pid, self.slot);
    }
}

/// Uprobe program `name`, loaded at its first use (the verifier's work is
/// done once for every process).
fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    let program: &mut UProbe = ebpf
        .program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()?;
    if program.fd().is_err() {
        program
            .load()
            .with_context(|| format!("the verifier rejected {name}"))?;
    }
    Ok(program)
}

/// Attaches `program` at `probe`'s site in `exe`, for process `pid` only, or
/// every process that runs it.
fn attach_uprobe(
    program: &mut UProbe,
    probe: &PlannedProbe,
    exe: &Path,
    pid: Option<NonZeroU32>,
) -> Result<UProbeLinkId> {
    program
        .attach(
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(probe.file_offset),
                cookie: Some(probe.cookie),
            },
            exe,
            match pid {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            },
        )
        .with_context(|| format!("cannot attach a uprobe to {}", probe.function))
}

/// What the kernel programs need to know of one process.
pub struct ProcessConfig {
    pub facets: Vec<Facet>,
    /// Bits of `stream`: what goes to the ring buffer.
    pub stream_events: u32,
    /// Run-time address of the global run queue's length (0: unknown).
    pub global_runq_size: u64,
    /// Whether its parks take their stacks (the block profile).
    pub block_stacks: bool,
}

/// Registers `target` with the loaded programs: from now on they count
/// what the attached uprobes see of it.
pub fn register(
    kernel: &Arc<Kernel>,
    target: &Target,
    binary: &GoBinary,
    process: &ProcessConfig,
) -> Result<ProcessSlot> {
    let pid_namespace = target.pid_namespace()?;
    let facets = &process.facets;
    let config = Config {
        target_tgid: target.pid,
        slot: 0, // chosen by `register`
        signal_sig_offset: kernel.signal_offsets.0,
        signal_pid_offset: kernel.signal_offsets.1,
        stream_events: process.stream_events,
        syscalls_from_casgstatus: u32::from(
            facets.contains(&Facet::Syscalls) && syscalls_from_casgstatus(binary.version),
        ),
        schedule_probed: u32::from(facets.contains(&Facet::Schedule)),
        block_stacks: u32::from(process.block_stacks),
        pidns_dev: pid_namespace.map_or(0, |ns| ns.0),
        pidns_ino: pid_namespace.map_or(0, |ns| ns.1),
        global_runq_size: process.global_runq_size,
        offsets: binary.offsets,
    };
    Ok(ProcessSlot {
        kernel: kernel.clone(),
        pid: target.pid,
        slot: kernel.register(config)?,
    })
}

/// Attaches the uprobes of `plan` that stay attached to `exe` (for process
/// `pid` only, or (None) every process that runs the file) and loads the
/// transition probes' programs, attached in windows.
pub fn attach(
    kernel: &Arc<Kernel>,
    exe: &Path,
    pid: Option<u32>,
    plan: &[PlannedProbe],
) -> Result<Probes> {
    let pid = match pid {
        Some(pid) => Some(NonZeroU32::new(pid).context("pid 0 cannot be traced")?),
        None => None,
    };
    // From here on, dropping `probes` detaches what is attached.
    let mut probes = Probes {
        kernel: kernel.clone(),
        windowed: Vec::new(),
        window: Vec::new(),
        window_starts: kernel.open_map("WINDOW")?,
        fixed: Vec::new(),
        exe: exe.to_owned(),
        pid,
        hit_cost: kernel.hit_cost,
    };
    kernel.with_ebpf(|ebpf| {
        for probe in plan {
            // Loaded (verified) now; the transition probes are attached when
            // a window opens.
            let program = uprobe(ebpf, probe.program)?;
            if probe.windowed {
                probes.windowed.push(probe.clone());
            } else {
                let link = attach_uprobe(program, probe, exe, pid)?;
                probes.fixed.push((probe.program, link));
            }
        }
        anyhow::Ok(())
    })?;
    Ok(probes)
}
