//! The transition probes of one program behind one link of many sites
//! (`BPF_TRACE_UPROBE_MULTI`, kernel ≥ 6.6), which aya 0.14 can neither load
//! a program for nor attach: the program is loaded again here, from the same
//! object with the same maps, with that attach type, and linked with
//! `BPF_LINK_CREATE`.
//!
//! Why: a window's close. A perf-event uprobe link (aya's) is released under
//! the kernel's global `event_mutex` (`perf_uprobe_destroy`), which it holds
//! while it waits a grace period (~80 ms here); its program is gone first,
//! and its site traps, uncounted, until its turn: one link at a time, over a
//! second for the links of three executables. A uprobe_multi link's release
//! (`bpf_uprobe_multi_link_release` in `kernel/trace/bpf_trace.c`) takes out
//! every site's breakpoint first (`uprobe_unregister_nosync`), then waits
//! one grace period, under no global lock: its program counts every trap up
//! to the site's restore, and links close side by side.

use std::{
    collections::HashMap,
    ffi::CString,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};

use crate::sources::{drain::bpf, kernel};

/// Verifier log room when a load fails (to say why).
const VERIFIER_LOG_BYTES: usize = 1 << 20;

/// The object's programs, relocated against the loaded object's maps, to be
/// loaded for uprobe_multi links.
pub struct MultiPrograms {
    object: aya_obj::Object,
    /// The maps the relocated instructions name (by descriptor number): kept
    /// open as long as a program may still be loaded.
    _maps: Vec<OwnedFd>,
}

impl MultiPrograms {
    /// Parses `object` (what `ebpf` was loaded from) and points its programs
    /// at `ebpf`'s maps: call before any map is taken out of `ebpf`.
    pub fn prepare(object: &[u8], ebpf: &Ebpf) -> Result<Self> {
        let mut parsed = aya_obj::Object::parse(object).context("cannot parse the eBPF object")?;
        if parsed.has_btf_relocations() {
            bail!("the eBPF object has CO-RE relocations, which this loader does not apply");
        }
        let mut fds: HashMap<String, OwnedFd> = HashMap::new();
        for (name, map) in ebpf.maps() {
            let fd = kernel::map_fd(map)
                .try_clone_to_owned()
                .with_context(|| format!("cannot duplicate map {name}"))?;
            fds.insert(name.to_owned(), fd);
        }
        let maps: Vec<(String, aya_obj::Map)> = parsed.maps.drain().collect();
        let text_sections = parsed
            .functions
            .keys()
            .map(|(section_index, _)| *section_index)
            .collect();
        let with_fds = maps
            .iter()
            .map(|(name, map)| {
                let fd = fds
                    .get(name)
                    .with_context(|| format!("the loaded object has no map {name}"))?;
                Ok((name.as_str(), fd.as_raw_fd(), map))
            })
            .collect::<Result<Vec<_>>>()?;
        parsed
            .relocate_maps(with_fds.into_iter(), &text_sections)
            .context("cannot relocate the eBPF object's maps")?;
        parsed
            .relocate_calls(&text_sections)
            .context("cannot relocate the eBPF object's calls")?;
        Ok(Self {
            object: parsed,
            _maps: fds.into_values().collect(),
        })
    }

    /// Loads program `name` to be attached by [`attach`].
    pub fn load(&self, name: &str) -> Result<OwnedFd> {
        let program = self
            .object
            .programs
            .get(name)
            .with_context(|| format!("the eBPF object has no program {name}"))?;
        let function = self
            .object
            .functions
            .get(&program.function_key())
            .with_context(|| format!("the eBPF object has no code for {name}"))?;
        let instructions = &function.instructions;
        let mut prog_name = [0 as libc::c_char; 16];
        for (to, from) in prog_name.iter_mut().zip(name.bytes().take(15)) {
            *to = from as libc::c_char;
        }
        let mut log = vec![0u8; VERIFIER_LOG_BYTES];
        for log_level in [0, 1] {
            // SAFETY: bpf_attr is plain data; zero is its default for every
            // command. The pointers outlive the call.
            let result = unsafe {
                let mut attr: bpf_attr = std::mem::zeroed();
                let load = &mut attr.__bindgen_anon_3;
                load.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
                load.expected_attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
                load.insns = instructions.as_ptr() as u64;
                load.insn_cnt = instructions.len() as u32;
                load.license = program.license.as_ptr() as u64;
                load.prog_name = prog_name;
                if log_level > 0 {
                    load.log_level = log_level;
                    load.log_buf = log.as_mut_ptr() as u64;
                    load.log_size = log.len() as u32;
                }
                bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
            };
            if result >= 0 {
                // SAFETY: the kernel returned a new descriptor, ours alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(result as i32) });
            }
        }
        let error = std::io::Error::last_os_error();
        let log = String::from_utf8_lossy(&log);
        let log = log.trim_end_matches('\0').trim();
        let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
        Err(error).with_context(|| {
            format!("the verifier rejected {name} for a uprobe_multi link: {tail}")
        })
    }
}

/// Attaches `program` (from [`MultiPrograms::load`]) at `sites` (file
/// offset, attach cookie) of `exe`, in process `pid` only or (None) in
/// every process that runs it. Closing the link's descriptor detaches it.
pub fn attach(
    program: BorrowedFd<'_>,
    exe: &Path,
    sites: &[(u64, u64)],
    pid: Option<u32>,
) -> std::io::Result<OwnedFd> {
    let path = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let offsets: Vec<u64> = sites.iter().map(|&(offset, _)| offset).collect();
    let cookies: Vec<u64> = sites.iter().map(|&(_, cookie)| cookie).collect();
    // SAFETY: as in `load`; `path`, `offsets` and `cookies` outlive the call.
    let result = unsafe {
        let mut attr: bpf_attr = std::mem::zeroed();
        let create = &mut attr.link_create;
        create.__bindgen_anon_1.prog_fd = program.as_raw_fd() as u32;
        create.attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
        let multi = &mut create.__bindgen_anon_3.uprobe_multi;
        multi.path = path.as_ptr() as u64;
        multi.offsets = offsets.as_ptr() as u64;
        multi.cookies = cookies.as_ptr() as u64;
        multi.cnt = sites.len() as u32;
        multi.pid = pid.unwrap_or(0);
        bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(result as i32) })
}
