//! The traced process: does it exist, which executable does it run, is it still
//! alive, where it is mapped. `machine`: what the machine must provide.

pub mod labels;
pub mod launch;
pub mod machine;

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    /// `/proc/PID/exe`: opens the executable even if it was deleted or lives in
    /// another mount namespace, and is what the uprobes attach to.
    pub exe: PathBuf,
    /// Start time (clock ticks since boot) to tell this process from a later one
    /// that reuses the pid.
    start_time: u64,
}

impl Target {
    /// The process `pid`, or the process a thread id `pid` belongs to (PREEMPT
    /// lines print thread ids, and users paste them): said on stderr.
    pub fn find(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| anyhow::anyhow!("no process with pid {pid}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        if field("State:").is_some_and(|state| state.starts_with('Z')) {
            bail!(
                "process {pid} has exited and is waiting to be reaped by its parent (pid {}):                  there is nothing left to watch",
                field("PPid:").unwrap_or("?")
            );
        }
        let tgid: u32 = field("Tgid:").and_then(|t| t.parse().ok()).unwrap_or(pid);
        let pid = if tgid != pid {
            eprintln!("gobpf-sched: {pid} is a thread of process {tgid}: watching process {tgid}");
            tgid
        } else {
            pid
        };
        let Some(start_time) = start_time(pid) else {
            bail!("no process with pid {pid}");
        };
        Ok(Self {
            pid,
            exe: PathBuf::from(format!("/proc/{pid}/exe")),
            start_time,
        })
    }

    /// CPU time the process has used, user and system, in ns (exited threads
    /// included).
    pub fn cpu_time_ns(&self) -> Option<u64> {
        // The process's CPU clock counts in ns, the running slices included:
        // /proc/PID/stat counts clock ticks (10 ms), too coarse for the 100 ms
        // checks of the budget on a program using a few % of a core.
        let mut clock: libc::clockid_t = 0;
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both only write the out-parameters given.
        let read = unsafe {
            libc::clock_getcpuclockid(self.pid as libc::pid_t, &mut clock) == 0
                && libc::clock_gettime(clock, &mut now) == 0
        };
        // The clock is by pid: it is this process's while its start time is.
        if read && self.is_alive() {
            return Some(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64);
        }
        let fields = stat_fields(self.pid)?;
        // Fields 14 (utime) and 15 (stime).
        let ticks: u64 =
            fields.get(14 - 3)?.parse::<u64>().ok()? + fields.get(15 - 3)?.parse::<u64>().ok()?;
        Some(ticks_to_ns(ticks))
    }

    /// How long the process has been running.
    pub fn age(&self) -> Option<Duration> {
        // Its start time counts clock ticks since boot, as CLOCK_BOOTTIME does.
        let now = crate::stats::clock::read_clock(libc::CLOCK_BOOTTIME);
        now.checked_sub(ticks_to_ns(self.start_time))
            .map(Duration::from_nanos)
    }

    /// Where the executable link points (`... (deleted)` if the file was replaced),
    /// for messages. Needs the privileges to inspect the process.
    pub fn exe_name(&self) -> Result<String> {
        match std::fs::read_link(&self.exe) {
            Ok(link) => Ok(link.display().to_string()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                bail!("process {} has no executable (a kernel thread?)", self.pid)
            }
            Err(err) => Err(err).with_context(|| format!("cannot read {}", self.exe.display())),
        }
    }

    /// `error`, or what really happened when the process is gone: attaching to
    /// a process that exits midway fails in odd places (perf_event_open: ENOENT).
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        if self.is_alive() {
            error
        } else {
            anyhow::anyhow!(
                "process {} exited while gobpf-sched was attaching",
                self.pid
            )
        }
    }

    /// False once the process has exited (or is a zombie waiting for its parent).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

impl Target {
    /// The target's pid namespace (device, inode of `/proc/PID/ns/pid`) when it
    /// is not ours: a container. Thread ids the runtime stores are from there.
    pub fn pid_namespace(&self) -> Result<Option<(u64, u64)>> {
        let theirs = std::fs::metadata(format!("/proc/{}/ns/pid", self.pid))
            .with_context(|| format!("cannot read the pid namespace of process {}", self.pid))?;
        let ours = std::fs::metadata("/proc/self/ns/pid")?;
        Ok((theirs.ino() != ours.ino() || theirs.dev() != ours.dev())
            .then(|| (theirs.dev(), theirs.ino())))
    }

    /// The shared objects the process has mapped (other than its executable),
    /// as paths that open them from here (through its root: a container's files).
    pub fn mapped_libraries(&self) -> Vec<PathBuf> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap_or_default();
        let exe = std::fs::read_link(&self.exe).ok();
        let mut paths: Vec<PathBuf> = maps
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .filter(|path| path.starts_with('/'))
            .map(PathBuf::from)
            .filter(|path| Some(path) != exe.as_ref())
            .collect();
        paths.sort();
        paths.dedup();
        paths
            .into_iter()
            .map(|path| {
                PathBuf::from(format!("/proc/{}/root", self.pid))
                    .join(path.strip_prefix("/").unwrap_or(&path))
            })
            .collect()
    }

    /// The executable mappings of the process that are not its Go code,
    /// named as `perf` names them: `[vdso]`, `[uprobes]` (the kernel's
    /// out-of-line copies of probed instructions), a file's name in brackets
    /// (`[libc.so.6]`), `[anonymous]`. Empty when the process is gone.
    pub fn code_mappings(&self) -> Vec<(u64, u64, String)> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap_or_default();
        maps.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if !fields.get(1)?.contains('x') {
                    return None;
                }
                let (start, end) = fields.first()?.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                let name = match fields.get(5) {
                    Some(special) if special.starts_with('[') => (*special).to_owned(),
                    Some(path) => format!("[{}]", Path::new(path).file_name()?.to_string_lossy()),
                    None => "[anonymous]".to_owned(),
                };
                Some((start, end, name))
            })
            .collect()
    }

    /// Difference between run-time and link-time addresses: 0 unless PIE.
    pub fn load_bias(&self, pie: bool, first_segment_vaddr: u64) -> Result<u64> {
        if !pie {
            return Ok(0);
        }
        let inode = std::fs::metadata(&self.exe)?.ino();
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))?;
        for line in maps.lines() {
            // start-end perms offset dev inode path: the mapping of file offset 0.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 6
                && fields[2].trim_start_matches('0').is_empty()
                && fields[4].parse::<u64>().ok() == Some(inode)
            {
                let start = fields[0].split('-').next().unwrap_or_default();
                let start = u64::from_str_radix(start, 16)?;
                return Ok(start.wrapping_sub(first_segment_vaddr & !0xfff));
            }
        }
        bail!(
            "cannot find where {} is mapped in process {}",
            self.exe.display(),
            self.pid
        )
    }
}

/// Field 22 of `/proc/PID/stat`, or None if the process is gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    if matches!(fields.first().map(String::as_str), Some("Z") | Some("X")) {
        return None;
    }
    // Field 22 of proc_pid_stat(5).
    fields.get(22 - 3)?.parse().ok()
}

/// The fields of /proc/PID/stat from field 3 (state) on: the command name
/// (field 2) is in parentheses and may contain spaces.
/// Clock ticks (`/proc` times) in ns.
fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / per_second
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    Some(after_name.split(' ').map(str::to_owned).collect())
}
