//! The scheduler's own bookkeeping, read from the target's memory: what
//! `GODEBUG=schedtrace` prints, without restarting the program. `runtime.sched`
//! (global run queue, idle Ps, spinning and idle Ms, M count) and every P in
//! `runtime.allp` (local run queue, `runnext`, status), read with
//! `process_vm_readv`: read-only, the target never notices.
//!
//! The structures change while we read them, without a lock we could take. Each
//! value is checked against what the runtime guarantees (a local run queue holds
//! at most 256 goroutines, idle Ps are at most GOMAXPROCS, …); a read that breaks
//! one is taken again, and after a few tries the state is marked `approximate`
//! with the impossible values clamped.

use anyhow::{Context, Result, bail};

use crate::{
    binary::{
        GoBinary,
        fields::{self, Field},
    },
    stats::sched::{ProcState, SchedState, p_status_name},
};

/// Capacity of a P's local run queue (`runq [256]guintptr`, every version).
const LOCAL_RUNQ_CAPACITY: u32 = 256;
const READ_ATTEMPTS: usize = 4;
/// Ps read per `process_vm_readv` (two pieces each; the kernel takes at most
/// IOV_MAX = 1024 pieces a call).
const PS_PER_READ: usize = 512;

/// Where everything is, for one process.
#[derive(Debug, Clone)]
pub struct SchedLayout {
    /// Run-time addresses of `runtime.sched` and `runtime.allp`.
    sched: u64,
    allp: u64,
    /// Offsets in `schedt`.
    npidle: u64,
    nmspinning: u64,
    nmidle: u64,
    mnext: u64,
    nmfreed: u64,
    /// `schedt.runqsize` up to Go 1.24, `schedt.runq.size` from 1.25.
    runq_size: u64,
    /// Offsets in `p`.
    p_id: u64,
    p_status: u64,
    p_runqhead: u64,
    p_runqtail: u64,
    p_runnext: u64,
}

impl SchedLayout {
    /// Fails with what is missing: the globals (a stripped binary) or a field.
    pub fn new(binary: &GoBinary, load_bias: u64) -> Result<Self> {
        let Some(globals) = binary.scheduler_globals else {
            bail!(
                "the binary has no symbol table, so runtime.sched and runtime.allp cannot be \
                 found (build without -ldflags=-s to see run queues)"
            );
        };
        let field = |field: Field| {
            field
                .offset_in(&binary.struct_offsets)
                .with_context(|| format!("no offset for {}", field.key()))
        };
        let runq_size = fields::runq_size_offset(&binary.struct_offsets)
            .context("no offset for the global run-queue length")?;
        Ok(Self {
            sched: globals.sched.wrapping_add(load_bias),
            allp: globals.allp.wrapping_add(load_bias),
            npidle: field(fields::SCHED_NPIDLE)?,
            nmspinning: field(fields::SCHED_NMSPINNING)?,
            nmidle: field(fields::SCHED_NMIDLE)?,
            mnext: field(fields::SCHED_MNEXT)?,
            nmfreed: field(fields::SCHED_NMFREED)?,
            runq_size,
            p_id: field(fields::P_ID)?,
            p_status: field(fields::P_STATUS)?,
            p_runqhead: field(fields::P_RUNQHEAD)?,
            p_runqtail: field(fields::P_RUNQTAIL)?,
            p_runnext: field(fields::P_RUNNEXT)?,
        })
    }

    /// Bytes of `schedt` and `p` we need to read (up to the last field used).
    fn sched_span(&self) -> usize {
        [
            self.npidle + 4,
            self.nmspinning + 4,
            self.nmidle + 4,
            self.mnext + 8,
            self.nmfreed + 8,
            self.runq_size + 4,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
    }

    /// The bytes of a P read: from its start to the last of id, status and the
    /// queue's head and tail; then runnext alone (the 2 KiB queue lies between).
    fn p_pieces(&self) -> [(u64, usize); 2] {
        let head = [
            self.p_id + 4,
            self.p_status + 4,
            self.p_runqhead + 4,
            self.p_runqtail + 4,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        [(0, head as usize), (self.p_runnext, 8)]
    }
}

/// Reads the scheduler state of `pid`.
pub fn read(pid: u32, layout: &SchedLayout) -> Result<SchedState> {
    let mut last = None;
    for _ in 0..READ_ATTEMPTS {
        let (state, consistent) = read_once(pid, layout)?;
        if consistent {
            return Ok(state);
        }
        last = Some(state);
    }
    let mut state = last.unwrap_or_default();
    state.approximate = true;
    Ok(state)
}

/// One read; false when some value is impossible (clamped in the result).
fn read_once(pid: u32, layout: &SchedLayout) -> Result<(SchedState, bool)> {
    let mut consistent = true;
    // A slice: pointer, length, capacity. GOMAXPROCS has no upper bound in Go;
    // a length over the capacity is a torn read.
    let allp = read_memory(pid, layout.allp, 24).context("cannot read runtime.allp")?;
    let array = u64_at(&allp, 0);
    let mut len = u64_at(&allp, 8);
    if len > u64_at(&allp, 16) || len > i32::MAX as u64 {
        consistent = false;
        len = 0;
    }
    let sched =
        read_memory(pid, layout.sched, layout.sched_span()).context("cannot read runtime.sched")?;
    let pointers = if len == 0 {
        Vec::new()
    } else {
        read_memory(pid, array, len as usize * 8)
            .context("cannot read the array of runtime.allp")?
    };
    let addresses: Vec<u64> = (0..len as usize)
        .map(|index| u64_at(&pointers, index * 8))
        .collect();
    if addresses.contains(&0) {
        consistent = false;
    }
    let addresses: Vec<u64> = addresses.into_iter().filter(|&p| p != 0).collect();
    let mut procs = Vec::with_capacity(addresses.len());
    for (bytes, runnext) in read_procs(pid, &addresses, layout.p_pieces())? {
        let head = u32_at(&bytes, layout.p_runqhead as usize);
        let tail = u32_at(&bytes, layout.p_runqtail as usize);
        // head and tail are read apart and move while we read: the difference
        // can be "negative" (wraps) or over capacity for a moment.
        let mut runq = tail.wrapping_sub(head);
        if runq > LOCAL_RUNQ_CAPACITY {
            consistent = false;
            runq = 0;
        }
        let status = u32_at(&bytes, layout.p_status as usize);
        procs.push(ProcState {
            id: u32_at(&bytes, layout.p_id as usize) as i32,
            status: p_status_name(status),
            runq,
            runnext: u64_at(&runnext, 0) != 0,
        });
    }
    let gomaxprocs = procs.len() as u32;
    let mut clamp = |value: u32, max: u32| {
        if value > max {
            consistent = false;
            max
        } else {
            value
        }
    };
    let idle_procs = clamp(u32_at(&sched, layout.npidle as usize), gomaxprocs);
    let spinning_threads = clamp(u32_at(&sched, layout.nmspinning as usize), gomaxprocs);
    let mnext = u64_at(&sched, layout.mnext as usize);
    let nmfreed = u64_at(&sched, layout.nmfreed as usize);
    let threads = mnext.saturating_sub(nmfreed);
    let idle_threads = clamp(
        u32_at(&sched, layout.nmidle as usize),
        threads.min(u64::from(u32::MAX)) as u32,
    );
    // A global run queue longer than a million goroutines is a torn read.
    let global_runq = clamp(u32_at(&sched, layout.runq_size as usize), 1 << 20);
    Ok((
        SchedState {
            gomaxprocs,
            idle_procs,
            threads,
            spinning_threads,
            idle_threads,
            global_runq,
            procs,
            approximate: !consistent,
        },
        consistent,
    ))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

/// The two pieces of each P at `addresses`, `PS_PER_READ` Ps per
/// `process_vm_readv` (GOMAXPROCS can be in the thousands).
fn read_procs(
    pid: u32,
    addresses: &[u64],
    [(head_at, head_len), (next_at, next_len)]: [(u64, usize); 2],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut procs = Vec::with_capacity(addresses.len());
    for chunk in addresses.chunks(PS_PER_READ) {
        let mut buffers: Vec<(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|_| (vec![0u8; head_len], vec![0u8; next_len]))
            .collect();
        let mut local = Vec::with_capacity(chunk.len() * 2);
        let mut remote = Vec::with_capacity(chunk.len() * 2);
        for ((head, next), &p) in buffers.iter_mut().zip(chunk) {
            for (buffer, at) in [(head, head_at), (next, next_at)] {
                local.push(libc::iovec {
                    iov_base: buffer.as_mut_ptr().cast(),
                    iov_len: buffer.len(),
                });
                remote.push(libc::iovec {
                    iov_base: (p + at) as *mut libc::c_void,
                    iov_len: buffer.len(),
                });
            }
        }
        let wanted = chunk.len() * (head_len + next_len);
        // SAFETY: each local iovec describes a buffer of `buffers`, alive and not
        // moved during the call; the remote ones are only read, in the other process.
        let read = unsafe {
            libc::process_vm_readv(
                pid as libc::pid_t,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if read < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot read the Ps");
        }
        if read as usize != wanted {
            bail!("short read of the Ps: {read} of {wanted} bytes");
        }
        procs.extend(buffers);
    }
    Ok(procs)
}

/// `len` bytes at `address` in process `pid`, with one `process_vm_readv`: reads
/// only, and fails cleanly on an unmapped address instead of faulting.
fn read_memory(pid: u32, address: u64, len: usize) -> Result<Vec<u8>> {
    let mut buffer = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buffer`, which outlives the call; `remote` is
    // only read by the kernel, in the other process.
    let read = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if read < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("process_vm_readv at {address:#x}"));
    }
    if read as usize != len {
        bail!("short read at {address:#x}: {read} of {len} bytes");
    }
    Ok(buffer)
}
