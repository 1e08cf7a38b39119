//! The scheduler's own bookkeeping, read from the target's memory: what
//! `GODEBUG=schedtrace` prints, without restarting the program. `runtime.sched`
//! (global run queue, idle Ps, spinning and idle Ms, M count) and every P in
//! `runtime.allp` (local run queue, `runnext`, status), read with
//! `process_vm_readv`: read-only, the target never notices. With them, the
//! runtime's own counters: each P's `schedtick`/`syscalltick`, the run-queue
//! latency histogram `sched.timeToRun`, stop-the-world pauses, mutex wait time,
//! goroutines created and GC cycles, where the Go version keeps them.
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
    stats::{
        runtime_histogram::{HistogramLayout, RuntimeCounts},
        sched::{ProcState, RuntimeCounters, SchedState, p_status_name},
    },
};

/// Capacity of a P's local run queue (`runq [256]guintptr`, every version).
const LOCAL_RUNQ_CAPACITY: u32 = 256;
const READ_ATTEMPTS: usize = 4;

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
    p_schedtick: u64,
    p_syscalltick: u64,
    /// What the version keeps: absent fields are named in `missing`.
    p_goroutines_created: Option<u64>,
    goroutines_created: Option<u64>,
    time_to_run: Option<HistogramAt>,
    stw_gc: Option<HistogramAt>,
    stw_other: Option<HistogramAt>,
    mutex_wait: Option<u64>,
    /// Run-time address of `runtime.memstats.numgc`.
    numgc: Option<u64>,
    /// Counters this binary does not have, and why ("not kept by go1.19").
    pub missing: Vec<(&'static str, String)>,
}

/// A `timeHistogram` inside `schedt`.
#[derive(Debug, Clone, Copy)]
struct HistogramAt {
    layout: HistogramLayout,
    /// Offsets in `schedt` of its counts, underflow and overflow (1.20+).
    counts: u64,
    underflow: u64,
    overflow: Option<u64>,
}

impl HistogramAt {
    /// The histogram at `at` in `schedt`, laid out as the offsets say.
    fn new(at: u64, offsets: &std::collections::BTreeMap<String, u64>) -> Option<Self> {
        let counts = fields::TIME_HISTOGRAM_COUNTS.offset_in(offsets)?;
        let underflow = fields::TIME_HISTOGRAM_UNDERFLOW.offset_in(offsets)?;
        let overflow = fields::TIME_HISTOGRAM_OVERFLOW.offset_in(offsets);
        let layout = HistogramLayout::of(underflow.checked_sub(counts)? / 8, overflow.is_some())?;
        Some(Self {
            layout,
            counts: at + counts,
            underflow: at + underflow,
            overflow: overflow.map(|o| at + o),
        })
    }

    fn end(&self) -> u64 {
        self.overflow.unwrap_or(self.underflow).max(self.underflow) + 8
    }

    fn read(&self, sched: &[u8]) -> RuntimeCounts {
        let entries = ((self.underflow - self.counts) / 8) as usize;
        let counts: Vec<u64> = (0..entries)
            .map(|i| u64_at(sched, self.counts as usize + i * 8))
            .collect();
        RuntimeCounts::new(
            self.layout,
            &counts,
            u64_at(sched, self.underflow as usize),
            self.overflow.map_or(0, |o| u64_at(sched, o as usize)),
        )
    }
}

impl SchedLayout {
    /// Run-time address of the global run queue's length (an int32).
    pub fn global_runq_size_address(&self) -> u64 {
        self.sched + self.runq_size
    }

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
        let offsets = &binary.struct_offsets;
        let version = format!("go{}.{}", binary.version.0, binary.version.1);
        let mut missing = Vec::new();
        let mut kept = |name: &'static str, offset: Option<u64>| {
            if offset.is_none() {
                missing.push((name, format!("not kept by {version}")));
            }
            offset
        };
        let mut histogram = |name, field: Field| {
            kept(name, field.offset_in(offsets)).and_then(|at| HistogramAt::new(at, offsets))
        };
        let time_to_run = histogram("run_queue_latency", fields::SCHED_TIME_TO_RUN);
        let stw_gc = histogram("stw_gc_pauses", fields::SCHED_STW_TOTAL_TIME_GC);
        let stw_other = histogram("stw_other_pauses", fields::SCHED_STW_TOTAL_TIME_OTHER);
        let mutex_wait = kept(
            "mutex_wait_ns",
            fields::SCHED_TOTAL_MUTEX_WAIT_TIME.offset_in(offsets),
        );
        let goroutines_created = kept(
            "goroutines_created",
            fields::SCHED_GOROUTINES_CREATED.offset_in(offsets),
        );
        let p_goroutines_created = fields::P_GOROUTINES_CREATED.offset_in(offsets);
        let numgc = match (globals.memstats, fields::MSTATS_NUMGC.offset_in(offsets)) {
            (Some(memstats), Some(numgc)) => Some(memstats.wrapping_add(load_bias) + numgc),
            (None, _) => {
                missing.push((
                    "gc_cycles",
                    "runtime.memstats not found (no symbol table)".to_owned(),
                ));
                None
            }
            (_, None) => {
                missing.push(("gc_cycles", format!("not kept by {version}")));
                None
            }
        };
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
            p_schedtick: field(fields::P_SCHEDTICK)?,
            p_syscalltick: field(fields::P_SYSCALLTICK)?,
            p_goroutines_created: goroutines_created.and(p_goroutines_created),
            goroutines_created,
            time_to_run,
            stw_gc,
            stw_other,
            mutex_wait,
            numgc,
            missing,
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
            self.mutex_wait.map_or(0, |at| at + 8),
            self.goroutines_created.map_or(0, |at| at + 8),
        ]
        .into_iter()
        .chain(
            [self.time_to_run, self.stw_gc, self.stw_other]
                .iter()
                .flatten()
                .map(HistogramAt::end),
        )
        .max()
        .unwrap_or(0) as usize
    }

    /// The bytes of a P read: from its start to the last of id, status, ticks
    /// and the queue's head and tail; then runnext alone (the 2 KiB queue lies
    /// between); then goroutinesCreated (1.26+, far on).
    fn p_pieces(&self) -> Vec<(u64, usize)> {
        let head = [
            self.p_id + 4,
            self.p_status + 4,
            self.p_runqhead + 4,
            self.p_runqtail + 4,
            self.p_schedtick + 4,
            self.p_syscalltick + 4,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let mut pieces = vec![(0, head as usize), (self.p_runnext, 8)];
        pieces.extend(self.p_goroutines_created.map(|at| (at, 8)));
        pieces
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
    let pieces = layout.p_pieces();
    let records = read_pieces(pid, &addresses, &pieces).context("cannot read the Ps")?;
    if records.complete < addresses.len() {
        bail!(
            "short read of the Ps: {} of {}",
            records.complete,
            addresses.len()
        );
    }
    let mut goroutines_created = layout
        .goroutines_created
        .map(|at| u64_at(&sched, at as usize));
    for index in 0..addresses.len() {
        let bytes = records.piece(index, 0);
        let runnext = records.piece(index, 1);
        if let Some(total) = &mut goroutines_created {
            *total += u64_at(records.piece(index, 2), 0);
        }
        let head = u32_at(bytes, layout.p_runqhead as usize);
        let tail = u32_at(bytes, layout.p_runqtail as usize);
        // head and tail are read apart and move while we read: the difference
        // can be "negative" (wraps) or over capacity for a moment.
        let mut runq = tail.wrapping_sub(head);
        if runq > LOCAL_RUNQ_CAPACITY {
            consistent = false;
            runq = 0;
        }
        let status = u32_at(bytes, layout.p_status as usize);
        procs.push(ProcState {
            id: u32_at(bytes, layout.p_id as usize) as i32,
            status: p_status_name(status),
            runq,
            runnext: u64_at(runnext, 0) != 0,
            schedtick: u32_at(bytes, layout.p_schedtick as usize),
            syscalltick: u32_at(bytes, layout.p_syscalltick as usize),
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
    let counters = RuntimeCounters {
        time_to_run: layout.time_to_run.map(|h| h.read(&sched)),
        stw_gc: layout.stw_gc.map(|h| h.read(&sched)),
        stw_other: layout.stw_other.map(|h| h.read(&sched)),
        mutex_wait_ns: layout.mutex_wait.map(|at| u64_at(&sched, at as usize)),
        goroutines_created,
        gc_cycles: match layout.numgc {
            Some(at) => Some(u32_at(&read_memory(pid, at, 4)?, 0)),
            None => None,
        },
    };
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
            counters,
        },
        consistent,
    ))
}

pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

/// Pieces read at many addresses (Ps, goroutines): piece k of record i is
/// `len` bytes at `addresses[i] + offset`.
pub struct Records {
    data: Vec<u8>,
    /// Where each piece starts in a record, and the record's size.
    starts: Vec<(usize, usize)>,
    record_len: usize,
    /// Records read whole (a failed read stops the kernel at the first piece
    /// it cannot read: the records after are zeros).
    pub complete: usize,
}

impl Records {
    pub fn piece(&self, record: usize, piece: usize) -> &[u8] {
        let (start, len) = self.starts[piece];
        let at = record * self.record_len + start;
        &self.data[at..at + len]
    }
}

/// `pieces` of every address in `addresses`, with as few `process_vm_readv`
/// calls as the kernel allows.
pub fn read_pieces(pid: u32, addresses: &[u64], pieces: &[(u64, usize)]) -> Result<Records> {
    let mut starts = Vec::with_capacity(pieces.len());
    let mut record_len = 0;
    for &(_, len) in pieces {
        starts.push((record_len, len));
        record_len += len;
    }
    let ranges: Vec<(u64, usize)> = addresses
        .iter()
        .flat_map(|&address| {
            pieces
                .iter()
                .map(move |&(offset, len)| (address.wrapping_add(offset), len))
        })
        .collect();
    let mut data = Vec::new();
    let read = read_ranges(pid, &ranges, &mut data)?;
    Ok(Records {
        data,
        starts,
        record_len,
        complete: read / pieces.len().max(1),
    })
}

/// The kernel takes at most IOV_MAX (1024) pieces per `process_vm_readv`.
const IOV_MAX: usize = 1024;

/// Reads every `(address, len)` range into the start of `data`, one after
/// the other (grown to fit: reused from one call to the next, it costs no
/// new pages), and returns how many ranges were read: a range that cannot be
/// read (an address reused or unmapped meanwhile) stops the reading there
/// (the bytes after are stale).
pub fn read_ranges(pid: u32, ranges: &[(u64, usize)], data: &mut Vec<u8>) -> Result<usize> {
    let total: usize = ranges.iter().map(|&(_, len)| len).sum();
    if data.len() < total {
        data.resize(total, 0);
    }
    let mut done = 0;
    let mut rest = &mut data[..total];
    for batch in ranges.chunks(IOV_MAX) {
        let mut local = Vec::with_capacity(batch.len());
        let mut remote = Vec::with_capacity(batch.len());
        let mut wanted = 0;
        for &(address, len) in batch {
            let (piece, after) = std::mem::take(&mut rest).split_at_mut(len);
            rest = after;
            wanted += len;
            local.push(libc::iovec {
                iov_base: piece.as_mut_ptr().cast(),
                iov_len: len,
            });
            remote.push(libc::iovec {
                iov_base: address as *mut libc::c_void,
                iov_len: len,
            });
        }
        // SAFETY: each local iovec describes a piece of `data`, alive and not
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
            let error = std::io::Error::last_os_error();
            // EFAULT: the first range itself was unreadable; other errors (the
            // process is gone, no permission) end the read.
            if error.raw_os_error() != Some(libc::EFAULT) {
                return Err(error).context("process_vm_readv");
            }
            break;
        }
        let mut left = read as usize;
        for &(_, len) in batch {
            if left < len {
                break;
            }
            left -= len;
            done += 1;
        }
        if read as usize != wanted {
            break;
        }
    }
    Ok(done)
}

/// `len` bytes at `address` in process `pid`, with one `process_vm_readv`: reads
/// only, and fails cleanly on an unmapped address instead of faulting.
pub fn read_memory(pid: u32, address: u64, len: usize) -> Result<Vec<u8>> {
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
