//! What one uprobe hit costs on this machine, measured at start: a function of
//! the observer itself, whose first instruction is the `push rbp` Go functions
//! start with (an instruction the kernel emulates, as at most probe sites), is
//! called in a loop with and without a minimal probe on it. The difference per
//! call is the trap into the kernel and back, which dominates a hit; what our
//! programs add on top is measured live from the kernel's BPF statistics.

use std::{
    num::NonZeroU32,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};

std::arch::global_asm!(
    ".globl gobpf_sched_calibration_site",
    ".type gobpf_sched_calibration_site, @function",
    "gobpf_sched_calibration_site:",
    "push rbp",
    "mov rbp, rsp",
    "pop rbp",
    "ret",
);

unsafe extern "C" {
    fn gobpf_sched_calibration_site();
}

/// Calls per measurement: ~1 µs each with the probe, so ~20 ms.
const CALLS: u64 = 20_000;
const ROUNDS: usize = 3;

/// The measured cost of a uprobe hit.
#[derive(Debug, Clone, Copy)]
pub struct HitCost {
    pub ns: f64,
    /// How long measuring it took.
    pub took: Duration,
}

/// Measures it with the `calibration` program of `ebpf`.
pub fn measure(ebpf: &mut Ebpf) -> Result<HitCost> {
    let started = Instant::now();
    let file_offset = site_file_offset()?;
    let pid = NonZeroU32::new(std::process::id()).context("pid 0")?;
    let program: &mut UProbe = ebpf
        .program_mut("calibration")
        .context("the eBPF object has no calibration program")?
        .try_into()?;
    if program.fd().is_err() {
        program
            .load()
            .context("the verifier rejected the calibration program")?;
    }
    // One attach (it takes milliseconds): the bare loops, then the probed ones.
    let bare = median((0..ROUNDS).map(|_| time_calls()).collect());
    let link = program
        .attach(
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(file_offset),
                cookie: None,
            },
            "/proc/self/exe",
            UProbeScope::OneProcess(pid),
        )
        .context(
            "cannot attach the calibration uprobe (attaching uprobes needs CAP_SYS_ADMIN from \
             Linux 6.16, and its stable kernels since July 2025; CAP_PERFMON was enough before)",
        )?;
    let probed = median((0..ROUNDS).map(|_| time_calls()).collect());
    program.detach(link)?;
    let hits: PerCpuArray<_, u64> = PerCpuArray::try_from(
        ebpf.map("CALIBRATION_HITS")
            .context("the eBPF object has no CALIBRATION_HITS map")?,
    )?;
    let counted: u64 = hits.get(&0, 0)?.iter().sum();
    ensure!(
        counted == CALLS * ROUNDS as u64,
        "the calibration uprobe fired {counted} times for {} calls: uprobes do not work here",
        CALLS * ROUNDS as u64
    );
    Ok(HitCost {
        ns: ((probed.as_nanos() as f64 - bare.as_nanos() as f64) / CALLS as f64).max(0.0),
        took: started.elapsed(),
    })
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn time_calls() -> Duration {
    let started = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: the function only pushes and pops rbp.
        unsafe { gobpf_sched_calibration_site() };
    }
    started.elapsed()
}

/// Where the calibration site is in our own executable file: its run-time
/// address, through the mapping of /proc/self/maps that holds it.
fn site_file_offset() -> Result<u64> {
    let address = gobpf_sched_calibration_site as *const () as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").context("cannot read /proc/self/maps")?;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_), Some(offset)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        if (start..end).contains(&address) {
            return Ok(address - start + offset);
        }
    }
    bail!("the calibration function ({address:#x}) is in no mapping of /proc/self/maps")
}
