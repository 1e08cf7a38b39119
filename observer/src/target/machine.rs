//! What the machine must provide: root (CAP_BPF + CAP_PERFMON), uprobes, tracefs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Loading BPF programs and attaching uprobes needs CAP_BPF + CAP_PERFMON (or
/// CAP_SYS_ADMIN) in the initial user namespace: root in a container's user
/// namespace, or root with those capabilities dropped, cannot.
pub fn require_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|bits| u64::from_str_radix(bits.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    let capable = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    if unsafe { libc::geteuid() } != 0 && !capable {
        bail!(
            "gobpf-sched must run as root (it loads eBPF programs and attaches uprobes): \
             run it with sudo"
        );
    }
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let initial_namespace =
        uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if !initial_namespace {
        bail!(
            "gobpf-sched runs inside a user namespace (uid_map: {}), where the kernel does \
             not let it load BPF programs: run it as root on the host",
            uid_map.trim()
        );
    }
    if !capable {
        bail!(
            "gobpf-sched lacks the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) \
             that loading eBPF programs needs, and CAP_SYS_ADMIN that attaching uprobes needs \
             from Linux 6.16: run it as root without dropping them"
        );
    }
    Ok(())
}

/// The kernel exposes a `uprobe` PMU when it was built with CONFIG_UPROBE_EVENTS.
pub fn require_uprobes() -> Result<()> {
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        bail!(
            "this kernel has no uprobe support (/sys/bus/event_source/devices/uprobe is \
             missing): gobpf-sched needs a kernel built with CONFIG_UPROBE_EVENTS=y"
        );
    }
    Ok(())
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Returns the tracefs mount, mounting it when it is not (it is not by default on
/// some machines; the tracepoint attach needs it to find event ids).
pub fn ensure_tracefs() -> Result<PathBuf> {
    let tracefs = PathBuf::from(TRACEFS);
    if tracefs.join("events").is_dir() {
        return Ok(tracefs);
    }
    let result = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result != 0 {
        bail!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed ({}): \
             run `mount -t tracefs nodev {TRACEFS}`",
            std::io::Error::last_os_error()
        );
    }
    Ok(tracefs)
}

/// Byte offsets of `sig` and `pid` in a `signal:signal_generate` record, read from
/// the event's format description instead of assumed.
pub fn signal_generate_offsets(tracefs: &Path) -> Result<(u32, u32)> {
    let path = tracefs.join("events/signal/signal_generate/format");
    let format = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: is the signal:signal_generate tracepoint missing?",
            path.display()
        )
    })?;
    let offset_of = |field: &str| -> Result<u32> {
        format
            .lines()
            .find(|line| line.contains(field))
            .and_then(|line| line.split("offset:").nth(1))
            .and_then(|rest| rest.split(';').next())
            .and_then(|offset| offset.trim().parse().ok())
            .with_context(|| format!("{} has no field `{field}`", path.display()))
    };
    Ok((offset_of(" sig;")?, offset_of(" pid;")?))
}
