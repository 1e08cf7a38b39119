//! Binary analysis: everything gobpf-sched needs to know about a Go executable
//! before it can probe it: Go version and build settings, where the runtime
//! functions are, the field offsets of the runtime structs, the wait-reason names.
//!
//! Each fact has a preferred source and a fallback for stripped binaries:
//! functions from `.symtab`, else `.gopclntab`; struct offsets from DWARF, else the
//! generated per-version table (`layouts.json`); wait-reason names from the
//! binary's `runtime.waitReasonStrings`, else the table.

pub mod buildinfo;
pub mod contents;
pub mod dwarf;
pub mod fields;
pub mod image;
pub mod layouts;
pub mod pclntab;
pub mod prologue;
pub mod sched_globals;
pub mod source_lines;

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use fields::Field;
use gobpf_sched_common::GoOffsets;
use image::{Image, Segment};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use serde::Serialize;

pub use buildinfo::BuildInfo;
pub use source_lines::{SourceFrame, SourceLines};

/// Go versions this release supports: register ABI, `gopark`'s reason in the third
/// argument, and tested (Go 1.20 has no toolchain here: it works from DWARF only).
pub const SUPPORTED_GO: std::ops::RangeInclusive<(u32, u32)> = (1, 19)..=(1, 27);

/// Where the function addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// Where the struct offsets and wait-reason names came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum LayoutSource {
    /// The binary's own DWARF (offsets) and symbol table (wait reasons).
    Dwarf,
    /// The generated table, for this Go version, made with that toolchain.
    Table { version: String, toolchain: String },
}

/// Where the scheduler's globals are (link-time addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SchedulerGlobals {
    /// `runtime.sched`, a `schedt`.
    pub sched: u64,
    /// `runtime.allp`, a `[]*p`.
    pub allp: u64,
    pub found_in: GlobalsSource,
    /// `runtime.allgs`, a `[]*g` of every goroutine ever created: from
    /// `.symtab`, else from the code of `runtime.forEachG`, which ranges over it.
    pub allgs: Option<u64>,
    /// `runtime.memstats` (only with a symbol table).
    pub memstats: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalsSource {
    /// Their `.symtab` symbols.
    Symtab,
    /// The operands of `runtime.schedtrace` (stripped binaries).
    Schedtrace,
}

/// `runtime.sched` and `runtime.allp` from the code of `runtime.schedtrace`,
/// `runtime.allgs` from the code of `runtime.forEachG`.
fn schedtrace_globals(
    image: &image::Image<'_, '_>,
    functions_by_entry: &[(u64, String)],
    struct_offsets: &BTreeMap<String, u64>,
) -> Option<SchedulerGlobals> {
    let reads = |function: &str| {
        let index = functions_by_entry
            .iter()
            .position(|(_, name)| name == function)?;
        let entry = functions_by_entry[index].0;
        let end = functions_by_entry.get(index + 1)?.0;
        let code = image.bytes(entry, end - entry)?;
        Some(sched_globals::rip_relative_reads(code, entry))
    };
    let fields = sched_globals::schedtrace_fields(struct_offsets);
    let (sched, allp) = sched_globals::find(&reads("runtime.schedtrace")?, &fields)?;
    let allgs = reads("runtime.forEachG").and_then(|reads| sched_globals::only_slice(&reads, None));
    Some(SchedulerGlobals {
        sched,
        allp,
        found_in: GlobalsSource::Schedtrace,
        allgs,
        memstats: None,
    })
}

#[derive(Debug)]
pub struct GoBinary {
    /// Where the file was read from (code bytes are read again on demand).
    path: PathBuf,
    /// ... and the file kept open: `/proc/PID/exe` goes away with the
    /// process, and the code is still read after it exits (to name the last
    /// CPU samples).
    opened: Option<std::fs::File>,
    pub build: BuildInfo,
    /// What identifies this build for pprof: the GNU build ID in hex when the
    /// linker wrote one (what pprof compares a mapping's build ID with), else the
    /// Go build ID (`.note.go.buildid`), else empty.
    pub build_id: String,
    pub version: (u32, u32),
    /// Position-independent (ET_DYN): loaded at a random base.
    pub pie: bool,
    /// Has an ELF interpreter: linked against libc (cgo, external linking).
    pub dynamically_linked: bool,
    pub has_symtab: bool,
    pub has_dwarf: bool,
    pub symbols_from: SymbolSource,
    pub layout_from: LayoutSource,
    /// Every recorded member found, `"runtime.g.goid" → 152`.
    pub struct_offsets: BTreeMap<String, u64>,
    /// The members the probes read.
    pub offsets: GoOffsets,
    /// Wait-reason names, indexed by reason.
    pub wait_reasons: Vec<String>,
    /// `runtime.*` function entries from `.symtab` (empty when stripped) ...
    pub symtab_functions: HashMap<String, u64>,
    /// ... and from `.gopclntab`.
    pub pclntab_functions: HashMap<String, u64>,
    /// How many functions `.gopclntab` lists in all.
    pub pclntab_function_count: usize,
    /// Link-time addresses of `runtime.sched` and `runtime.allp`, when known:
    /// from `.symtab`, else from the code of `runtime.schedtrace` ...
    pub scheduler_globals: Option<SchedulerGlobals>,
    /// ... which is also tried when there is a symbol table (for `inspect`, which
    /// lets the tests compare both).
    pub scheduler_globals_in_code: Option<SchedulerGlobals>,
    /// Every function's entry and name, by entry: for naming code addresses ...
    functions_by_entry: Vec<(u64, String)>,
    /// ... up to the end of Go's code (beyond: the vDSO, C libraries, ...).
    text_end: u64,
    segments: Vec<Segment>,
}

impl GoBinary {
    /// Reads and checks `path`. `shown_as` names the binary in error messages.
    pub fn open(path: &Path, shown_as: &str) -> Result<Self> {
        let data = contents::read(path, shown_as)?;
        Self::parse(path, &data, shown_as)
    }

    /// Like [`GoBinary::is_go_file`], reading only the ELF headers and the
    /// section table (what `--all` asks of every process of the host).
    pub fn looks_like_go(path: &Path) -> bool {
        let Ok(file) = std::fs::File::open(path) else {
            return false;
        };
        let cache = object::ReadCache::new(file);
        object::File::parse(&cache).is_ok_and(|f| f.section_by_name(".go.buildinfo").is_some())
    }

    /// True when `path` is an ELF file with Go build info: a Go program, or a
    /// Go library (`-buildmode=c-shared`) loaded by a program in another language.
    pub fn is_go_file(path: &Path) -> bool {
        contents::read(path, "").is_ok_and(|data| {
            object::File::parse(&*data).is_ok_and(|f| f.section_by_name(".go.buildinfo").is_some())
        })
    }

    /// Like [`GoBinary::open`] on bytes already read from `path`.
    // Long: it gathers every fact in turn, each from its preferred source or its
    // fallback (the helpers below do the reading); the struct literal is half of it.
    pub fn parse(path: &Path, data: &[u8], shown_as: &str) -> Result<Self> {
        contents::check_whole(data, shown_as)?;
        let file = object::File::parse(data)
            .with_context(|| format!("{shown_as} is not an ELF executable"))?;
        let Some(build_section) = file.section_by_name(".go.buildinfo") else {
            bail!("{shown_as} is not a Go program (it has no .go.buildinfo section)");
        };
        let build = buildinfo::parse(build_section.data()?)
            .with_context(|| format!("cannot read the Go version of {shown_as}"))?;
        let go = &build.go_version;
        let version = check_supported(&file, go, shown_as)?;
        let segments: Vec<Segment> = file
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
        let image = Image {
            data,
            segments: &segments,
            file: &file,
        };

        let symtab = symtab_symbols(&file);
        let has_dwarf = dwarf::has_debug_info(&file);
        let (layout_from, struct_offsets, wait_reasons) = if has_dwarf {
            dwarf_layout(&file, &image, &symtab, shown_as)?
        } else {
            table_layout(version, go, shown_as)?
        };
        let symtab_functions: HashMap<String, u64> = symtab
            .iter()
            .filter(|(_, s)| s.is_function)
            .map(|(name, s)| (name.clone(), s.address))
            .collect();
        let moduledata_text = fields::MODULEDATA_TEXT.offset_in(&struct_offsets);
        let (all_functions, text_end) = pclntab::all_functions(&image, moduledata_text)
            .with_context(|| format!("cannot read the function table of {shown_as} ({go})"))?;
        let pclntab_function_count = all_functions.len();
        let pclntab_functions: HashMap<String, u64> = all_functions
            .iter()
            .filter(|(name, _)| name.starts_with("runtime."))
            .cloned()
            .collect();
        let mut functions_by_entry: Vec<(u64, String)> = all_functions
            .into_iter()
            .map(|(name, entry)| (entry, name))
            .collect();
        functions_by_entry.sort_unstable();
        let symbols_from = if symtab_functions.is_empty() {
            SymbolSource::Pclntab
        } else {
            SymbolSource::Symtab
        };

        let scheduler_globals_in_code =
            schedtrace_globals(&image, &functions_by_entry, &struct_offsets);
        let scheduler_globals = match (symtab.get("runtime.sched"), symtab.get("runtime.allp")) {
            (Some(sched), Some(allp)) => Some(SchedulerGlobals {
                sched: sched.address,
                allp: allp.address,
                found_in: GlobalsSource::Symtab,
                allgs: symtab.get("runtime.allgs").map(|s| s.address),
                memstats: symtab.get("runtime.memstats").map(|s| s.address),
            }),
            _ => scheduler_globals_in_code,
        };
        let offsets = go_offsets(&struct_offsets)
            .with_context(|| format!("cannot find runtime struct offsets of {shown_as}"))?;

        Ok(Self {
            path: path.to_owned(),
            opened: std::fs::File::open(path).ok(),
            build_id: build_id(&file),
            build,
            version,
            pie: file.kind() == object::ObjectKind::Dynamic,
            dynamically_linked: file.section_by_name(".interp").is_some(),
            has_symtab: !symtab.is_empty(),
            has_dwarf,
            symbols_from,
            layout_from,
            struct_offsets,
            offsets,
            wait_reasons,
            symtab_functions,
            pclntab_functions,
            pclntab_function_count,
            scheduler_globals,
            scheduler_globals_in_code,
            functions_by_entry,
            text_end,
            segments,
        })
    }

    /// Entry address of a runtime function, from the preferred source.
    pub fn function(&self, name: &str) -> Option<u64> {
        match self.symbols_from {
            SymbolSource::Symtab => self.symtab_functions.get(name),
            SymbolSource::Pclntab => self.pclntab_functions.get(name),
        }
        .copied()
    }

    /// The Go function containing link-time address `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Option<&str> {
        self.function_entry_at(vaddr).map(|(_, name)| name)
    }

    /// The entry and name of the Go function containing `vaddr`.
    pub fn function_entry_at(&self, vaddr: u64) -> Option<(u64, &str)> {
        if vaddr >= self.text_end {
            return None;
        }
        let after = self
            .functions_by_entry
            .partition_point(|(entry, _)| *entry <= vaddr);
        let (entry, name) = self.functions_by_entry.get(after.checked_sub(1)?)?;
        Some((*entry, name))
    }

    /// Where the direct call that returns to `return_address` goes, if the
    /// instruction before it is one (`call rel32`, as Go calls functions).
    pub fn direct_call_target(&self, return_address: u64) -> Option<u64> {
        const CALL_REL32: u8 = 0xe8;
        let call = return_address.checked_sub(5)?;
        self.function_at(call)?;
        let code = self.code(call, 5).ok()?;
        if code.first() != Some(&CALL_REL32) {
            return None;
        }
        let offset = i32::from_le_bytes(code.get(1..5)?.try_into().ok()?);
        return_address.checked_add_signed(i64::from(offset))
    }

    /// Where the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `[start, end)` of Go's code (link-time addresses).
    pub fn text_range(&self) -> Option<(u64, u64)> {
        Some((self.functions_by_entry.first()?.0, self.text_end))
    }

    /// Every function's (entry, name), by entry (link-time addresses).
    pub fn functions_by_entry(&self) -> &[(u64, String)] {
        &self.functions_by_entry
    }

    /// The source-line tables: reads the file again (the binary keeps only what
    /// the probes need).
    pub fn source_lines(&self) -> Result<SourceLines> {
        let shown_as = self.path.display().to_string();
        // Through the file kept open when there is one: `/proc/PID/exe` is
        // gone once the process has exited.
        let path = match &self.opened {
            Some(file) => {
                use std::os::fd::AsRawFd;
                PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
            }
            None => self.path.clone(),
        };
        let data = contents::read(&path, &shown_as)?;
        self.source_lines_from(&data)
            .with_context(|| format!("cannot read the line tables of {shown_as}"))
    }

    /// Like [`GoBinary::source_lines`] on the file's bytes, already read.
    pub fn source_lines_from(&self, data: &[u8]) -> Result<SourceLines> {
        let file = object::File::parse(data)?;
        let image = Image {
            data,
            segments: &self.segments,
            file: &file,
        };
        SourceLines::parse(&image, &self.struct_offsets)
    }

    /// Link-time address of the first byte of the file, to compute a PIE's load bias.
    pub fn first_segment_vaddr(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| s.file_offset == 0)
            .map_or(0, |s| s.vaddr)
    }

    /// File offset of a link-time virtual address (what a uprobe attaches to).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        image::file_offset(&self.segments, vaddr)
    }

    /// The first `len` bytes of code at link-time address `vaddr`.
    pub fn code(&self, vaddr: u64, len: usize) -> Result<Vec<u8>> {
        let offset = self
            .file_offset(vaddr)
            .with_context(|| format!("address {vaddr:#x} is not in the file"))?;
        let reopened;
        let file = match &self.opened {
            Some(file) => file,
            None => {
                reopened = std::fs::File::open(&self.path)
                    .with_context(|| format!("cannot read the code of {}", self.path.display()))?;
                &reopened
            }
        };
        let mut code = vec![0; len];
        let read = file.read_at(&mut code, offset)?;
        code.truncate(read);
        Ok(code)
    }
}

/// See [`GoBinary::build_id`].
fn build_id(file: &object::File<'_>) -> String {
    if let Ok(Some(gnu)) = file.build_id() {
        return gnu.iter().map(|b| format!("{b:02x}")).collect();
    }
    file.section_by_name(".note.go.buildid")
        .and_then(|section| section.data().ok())
        .and_then(go_build_id)
        .unwrap_or_default()
}

/// The Go build ID note (`elfwritegobuildid` in `cmd/link/internal/ld/elf.go`): namesz u32 ·
/// descsz u32 · type u32 (4, `ELF_NOTE_GOBUILDID_TAG`) · "Go\0\0" · the ID.
fn go_build_id(note: &[u8]) -> Option<String> {
    let word = |at: usize| Some(u32::from_le_bytes(note.get(at..at + 4)?.try_into().ok()?));
    let (namesz, descsz, kind) = (word(0)?, word(4)?, word(8)?);
    if namesz != 4 || kind != 4 || note.get(12..16)? != b"Go\0\0" {
        return None;
    }
    let desc = note.get(16..16usize.checked_add(usize::try_from(descsz).ok()?)?)?;
    Some(String::from_utf8_lossy(desc).into_owned())
}

/// Struct offsets, and wait-reason names: what a layout is made of.
type Layout = (LayoutSource, BTreeMap<String, u64>, Vec<String>);

/// The layout from the binary's own DWARF and symbol table.
fn dwarf_layout(
    file: &object::File<'_>,
    image: &Image<'_, '_>,
    symtab: &HashMap<String, SymtabSymbol>,
    shown_as: &str,
) -> Result<Layout> {
    let offsets = dwarf::member_offsets(file, fields::ALL)
        .with_context(|| format!("cannot read the DWARF of {shown_as}"))?;
    let reasons = match symtab.get("runtime.waitReasonStrings") {
        Some(table) => image
            .go_strings(table.address, table.size / 16)
            .with_context(|| format!("cannot read wait reasons of {shown_as}"))?,
        None => bail!("{shown_as} has DWARF but no runtime.waitReasonStrings symbol"),
    };
    Ok((LayoutSource::Dwarf, offsets, reasons))
}

/// The layout from the generated table, for a binary without DWARF.
fn table_layout(version: (u32, u32), go: &str, shown_as: &str) -> Result<Layout> {
    let Some(layout) = layouts::for_version(version) else {
        bail!(
            "{shown_as} is built with {go} without DWARF, and {go} is not in the \
             offsets table (it has {}): rebuild without -w or -s, or add the version \
             with `cargo xtask offsets`",
            layouts::listed_versions()
        );
    };
    Ok((
        LayoutSource::Table {
            version: layouts::key(version),
            toolchain: layout.toolchain.clone(),
        },
        layout.struct_offsets.clone(),
        layout.wait_reasons.clone(),
    ))
}

fn check_supported(
    file: &object::File<'_>,
    go_version: &str,
    shown_as: &str,
) -> Result<(u32, u32)> {
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
    Ok(version)
}

struct SymtabSymbol {
    address: u64,
    size: u64,
    is_function: bool,
}

/// `runtime.*` symbols of `.symtab` (none in a stripped binary).
fn symtab_symbols(file: &object::File<'_>) -> HashMap<String, SymtabSymbol> {
    file.symbols()
        .filter_map(|symbol| {
            let name = symbol.name().ok()?;
            name.starts_with("runtime.").then(|| {
                (
                    name.to_owned(),
                    SymtabSymbol {
                        address: symbol.address(),
                        size: symbol.size(),
                        is_function: symbol.kind() == object::SymbolKind::Text,
                    },
                )
            })
        })
        .collect()
}

fn go_offsets(found: &BTreeMap<String, u64>) -> Result<GoOffsets> {
    let get = |field: Field| {
        field
            .offset_in(found)
            .with_context(|| format!("no member {}", field.key()))
    };
    Ok(GoOffsets {
        g_goid: get(fields::G_GOID)?,
        g_m: get(fields::G_M)?,
        m_id: get(fields::M_ID)?,
        m_procid: get(fields::M_PROCID)?,
        m_p: get(fields::M_P)?,
        p_id: get(fields::P_ID)?,
        g_waitreason: get(fields::G_WAITREASON)?,
        g_startpc: get(fields::G_STARTPC)?,
        g_async_safe_point: get(fields::G_ASYNC_SAFE_POINT)?,
        p_runqhead: get(fields::P_RUNQHEAD)?,
        p_runqtail: get(fields::P_RUNQTAIL)?,
        p_runnext: get(fields::P_RUNNEXT)?,
    })
}
