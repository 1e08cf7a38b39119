//! Binary analysis: everything gobpf-sched needs to know about a Go executable
//! before it can probe it: Go version, where the runtime functions are (as file
//! offsets, which is what uprobes take), and the field offsets of `g`, `m`, `p`.

pub mod buildinfo;
pub mod dwarf;
pub mod prologue;

use std::{
    collections::HashMap,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use gobpf_sched_common::GoOffsets;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

pub use buildinfo::BuildInfo;

/// Go versions whose runtime this release was tested against (register ABI,
/// `gopark` reason in the third argument, the probed functions exist).
pub const SUPPORTED_GO: std::ops::RangeInclusive<(u32, u32)> = (1, 19)..=(1, 27);

/// The runtime struct members the kernel programs read.
const WANTED_MEMBERS: &[(&str, &[&str])] = &[
    ("runtime.g", &["goid", "m"]),
    ("runtime.m", &["id", "procid", "p"]),
    ("runtime.p", &["id"]),
];

/// A symbol of the binary: link-time virtual address and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    pub address: u64,
    pub size: u64,
}

/// A mapped piece of the file: `[vaddr, vaddr + filesz)` comes from `file_offset`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
}

#[derive(Debug)]
pub struct GoBinary {
    /// Where the file was read from (code bytes are read again on demand).
    path: PathBuf,
    pub build: BuildInfo,
    /// Position-independent (ET_DYN): loaded at a random base.
    pub pie: bool,
    pub offsets: GoOffsets,
    /// `runtime.*` symbols from `.symtab`.
    symbols: HashMap<String, Symbol>,
    segments: Vec<Segment>,
}

impl GoBinary {
    /// Reads and checks `path`. `shown_as` names the binary in error messages.
    pub fn open(path: &Path, shown_as: &str) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("cannot read {shown_as}"))?;
        Self::parse(path, &data, shown_as)
    }

    fn parse(path: &Path, data: &[u8], shown_as: &str) -> Result<Self> {
        let file = object::File::parse(data)
            .with_context(|| format!("{shown_as} is not an ELF executable"))?;
        let build_section = file.section_by_name(".go.buildinfo");
        if build_section.is_none() && file.section_by_name(".gopclntab").is_none() {
            bail!("{shown_as} is not a Go program (it has no .go.buildinfo or .gopclntab section)");
        }
        let build = match build_section {
            Some(section) => buildinfo::parse(section.data()?),
            None => bail!("{shown_as} is a Go program without build info (Go 1.17 or older)"),
        }
        .with_context(|| format!("cannot read the Go version of {shown_as}"))?;
        check_supported(&file, &build.go_version, shown_as)?;

        let symbols = runtime_symbols(&file);
        if symbols.is_empty() {
            bail!(
                "{shown_as} ({}) is stripped: it has no symbol table (.symtab). \
                 Stripped binaries (-ldflags=-s) are supported from a later release; \
                 rebuild without -s to trace it now",
                build.go_version
            );
        }
        if !dwarf::has_debug_info(&file) {
            bail!(
                "{shown_as} ({}) has no DWARF debug info, which gives the runtime struct \
                 offsets. Binaries built with -ldflags=-w are supported from a later release; \
                 rebuild without -w to trace it now",
                build.go_version
            );
        }
        let offsets = go_offsets(&file)
            .with_context(|| format!("cannot read runtime struct offsets from {shown_as}"))?;
        let segments = file
            .segments()
            .filter_map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                (file_size > 0).then_some(Segment {
                    vaddr: segment.address(),
                    file_offset,
                    file_size,
                })
            })
            .collect();
        Ok(Self {
            path: path.to_owned(),
            build,
            pie: file.kind() == object::ObjectKind::Dynamic,
            offsets,
            symbols,
            segments,
        })
    }

    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    /// File offset of a link-time virtual address (what a uprobe attaches to).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.file_size)
            .map(|s| vaddr - s.vaddr + s.file_offset)
    }

    /// The first `len` bytes of code at link-time address `vaddr`.
    pub fn code(&self, vaddr: u64, len: usize) -> Result<Vec<u8>> {
        let offset = self
            .file_offset(vaddr)
            .with_context(|| format!("address {vaddr:#x} is not in the file"))?;
        let file = std::fs::File::open(&self.path)?;
        let mut code = vec![0; len];
        let read = file.read_at(&mut code, offset)?;
        code.truncate(read);
        Ok(code)
    }

    /// Virtual address of the first byte of the file, for computing the load bias
    /// of a PIE binary from `/proc/PID/maps`.
    pub fn first_segment_vaddr(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.file_offset == 0)
            .map(|s| s.vaddr)
    }
}

fn check_supported(file: &object::File<'_>, go_version: &str, shown_as: &str) -> Result<()> {
    if file.architecture() != object::Architecture::X86_64 {
        bail!(
            "{shown_as} is built for {:?}; gobpf-sched supports amd64 (x86-64) only",
            file.architecture()
        );
    }
    let Some(version) = buildinfo::major_minor(go_version) else {
        bail!("{shown_as} reports Go version {go_version:?}, which gobpf-sched cannot interpret");
    };
    if !SUPPORTED_GO.contains(&version) {
        let ((lo_major, lo_minor), (hi_major, hi_minor)) =
            (SUPPORTED_GO.start(), SUPPORTED_GO.end());
        bail!(
            "{shown_as} is built with {go_version}, outside the supported range \
             go{lo_major}.{lo_minor} to go{hi_major}.{hi_minor}"
        );
    }
    Ok(())
}

fn runtime_symbols(file: &object::File<'_>) -> HashMap<String, Symbol> {
    file.symbols()
        .filter_map(|symbol| {
            let name = symbol.name().ok()?;
            name.starts_with("runtime.").then(|| {
                (
                    name.to_owned(),
                    Symbol {
                        address: symbol.address(),
                        size: symbol.size(),
                    },
                )
            })
        })
        .collect()
}

fn go_offsets(file: &object::File<'_>) -> Result<GoOffsets> {
    let found = dwarf::member_offsets(file, WANTED_MEMBERS)?;
    let get = |key: &str| {
        found
            .get(key)
            .copied()
            .with_context(|| format!("DWARF has no member {key}"))
    };
    Ok(GoOffsets {
        g_goid: get("runtime.g.goid")?,
        g_m: get("runtime.g.m")?,
        m_id: get("runtime.m.id")?,
        m_procid: get("runtime.m.procid")?,
        m_p: get("runtime.m.p")?,
        p_id: get("runtime.p.id")?,
    })
}
