//! What `cargo xtask fuzz` starts from: real Go binaries (the toolchains' own
//! `gofmt` and the test fixture built in several modes) as base files of the
//! window targets (see observer/fuzz/src/lib.rs), and seed inputs holding those
//! binaries' real headers, tables, sections, prologues and code.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol,
    read::elf::{ElfFile64, FileHeader},
};

use crate::toolchains::{self, Installed};

/// Bytes of a base file a seed window holds.
const WINDOW: usize = 256;
/// A prologue as the observer decodes it (`prologue::PROLOGUE_BYTES`).
const PROLOGUE: usize = 48;

/// A real Go binary and the Go version that built it.
pub struct Binary {
    pub name: String,
    pub data: Vec<u8>,
    /// `1.25` for go1.25.5: the key of the layouts table.
    pub version: String,
}

/// Seeds and, for the window targets, base files.
#[derive(Default)]
pub struct Inputs {
    pub bases: Vec<(String, Vec<u8>)>,
    pub seeds: Vec<Vec<u8>>,
}

impl Inputs {
    /// A seed that puts the base's own bytes back at `offset`: a real structure
    /// for the fuzzer to mutate.
    fn window(&mut self, base: usize, offset: u64) {
        let data = &self.bases[base].1;
        let Ok(at) = usize::try_from(offset) else {
            return;
        };
        if at >= data.len() {
            return;
        }
        let mut seed = vec![base as u8];
        seed.extend((at as u32).to_le_bytes());
        seed.extend(&data[at..data.len().min(at + WINDOW)]);
        self.seeds.push(seed);
    }
}

/// Builds the fixture `observer/tests/fixtures/scenario` and reads the toolchains'
/// `gofmt`: binaries with and without symbol table and DWARF, PIE, cgo.
pub fn binaries(toolchains: &Installed, dir: &Path) -> Result<(Vec<Binary>, Vec<Binary>)> {
    let fixture = toolchains::workspace_root().join("observer/tests/fixtures/scenario");
    let oldest = toolchains.go.first().context("no Go toolchain")?;
    let primary = toolchains.primary();
    let build = |go: &PathBuf, mode: &str, flags: &[&str], cgo: bool| -> Result<Binary> {
        let version = version_of(go);
        let output = dir.join(format!("scenario-go{version}-{mode}"));
        // The same bytes from any checkout and commit: the corpus stays valid.
        let mut flags = flags.to_vec();
        flags.extend(["-trimpath", "-buildvcs=false"]);
        toolchains::build_go_with(go, &fixture, &output, &flags, cgo)?;
        read(&output, version)
    };
    let gofmt = |go: &PathBuf| -> Result<Binary> {
        let path = go.with_file_name("gofmt");
        read(&path, version_of(go))
    };
    // Whole-binary bases: every path the parser takes.
    let whole = vec![
        gofmt(oldest)?,  // Debian's: stripped (function table and layouts table only)
        gofmt(primary)?, // symbol table, no DWARF
        build(primary, "default", &[], false)?, // compressed DWARF
        build(primary, "stripped", &["-ldflags=-s -w"], false)?,
        build(primary, "pie", &["-buildmode=pie"], false)?,
        build(primary, "cgo", &["-tags=cgo_fixture"], true)?, // external linking
    ];
    // The DWARF target mutates the DWARF itself, not a compressed stream of it.
    let uncompressed = ["-ldflags=-compressdwarf=false"];
    let dwarf = vec![
        build(oldest, "dwarf", &uncompressed, false)?,
        build(primary, "dwarf", &uncompressed, false)?,
    ];
    Ok((whole, dwarf))
}

fn version_of(go: &Path) -> String {
    let text = crate::toolchains::go_version(go);
    // go1.25.5 → 1.25
    let version = text.trim_start_matches("go");
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn read(path: &Path, version: String) -> Result<Binary> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if name == "gofmt" {
        format!("gofmt-go{version}")
    } else {
        name
    };
    Ok(Binary {
        name,
        data,
        version,
    })
}

/// `elf` and `dwarf`: whole binaries; windows on the ELF header, the program and
/// section header tables and the start of every section (and for DWARF, on the
/// entries of the runtime structs the observer reads).
pub fn whole_binaries(binaries: &[Binary], struct_names: &[&str]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for (index, binary) in binaries.iter().enumerate() {
        inputs
            .bases
            .push((format!("{index:02}-{}", binary.name), binary.data.clone()));
        let file = ElfFile64::<Endianness>::parse(&*binary.data)?;
        let header = file.elf_header();
        let endian = file.endian();
        inputs.window(index, 0);
        for (offset, count, size) in [
            (
                header.e_phoff(endian),
                header.e_phnum(endian),
                header.e_phentsize(endian),
            ),
            (
                header.e_shoff(endian),
                header.e_shnum(endian),
                header.e_shentsize(endian),
            ),
        ] {
            let len = u64::from(count) * u64::from(size);
            for at in (offset..offset + len).step_by(WINDOW) {
                inputs.window(index, at);
            }
        }
        for section in file.sections() {
            if let Some((offset, _)) = section.file_range() {
                inputs.window(index, offset);
            }
        }
        // A DWARF entry names its struct inline (DW_FORM_string): the window
        // starts at the entry, a few bytes before the name.
        if let Some(info) = file.section_by_name(".debug_info")
            && let Some((info_offset, _)) = info.file_range()
        {
            let data = info.data()?;
            for name in struct_names {
                let needle = format!("{name}\0");
                if let Some(at) = find(data, needle.as_bytes()) {
                    inputs.window(index, info_offset + at.saturating_sub(8) as u64);
                }
            }
        }
    }
    Ok(inputs)
}

/// `pclntab`: the function tables as bases; windows on the header, the function
/// table and the function names.
pub fn pclntab(binaries: &[Binary]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for binary in binaries {
        let file = object::File::parse(&*binary.data)?;
        // Its own section, or one inside .data.rel.ro (PIE).
        let Some(section) = [".gopclntab", ".data.rel.ro.gopclntab"]
            .iter()
            .find_map(|name| file.section_by_name(name))
        else {
            continue;
        };
        let table = section.data()?.to_vec();
        let index = inputs.bases.len();
        // Header words (pcHeader): funcnameOffset is the 3rd after the first 8
        // bytes, pclnOffset (the function table) the 7th.
        let word = |n: usize| {
            table
                .get(8 + 8 * n..16 + 8 * n)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let (funcnames, functab) = (word(3), word(7));
        inputs
            .bases
            .push((format!("{index:02}-{}", binary.name), table));
        for offset in [0, funcnames, functab, functab + WINDOW as u64] {
            inputs.window(index, offset);
        }
    }
    Ok(inputs)
}

/// `buildinfo`: every binary's `.go.buildinfo`, as it is.
pub fn buildinfo(binaries: &[Binary]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for binary in binaries {
        let file = object::File::parse(&*binary.data)?;
        if let Some(section) = file.section_by_name(".go.buildinfo") {
            inputs.seeds.push(section.data()?.to_vec());
        }
    }
    Ok(inputs)
}

/// `prologue`: the first bytes of every `runtime` function (binaries with a
/// symbol table), each distinct prologue once.
pub fn prologue(binaries: &[&Binary]) -> Result<Inputs> {
    let mut prologues = BTreeSet::new();
    for binary in binaries {
        let file = object::File::parse(&*binary.data)?;
        for symbol in file.symbols() {
            if symbol.kind() == object::SymbolKind::Text
                && symbol.name().is_ok_and(|n| n.starts_with("runtime."))
                && let Some(code) = code(&file, &symbol, PROLOGUE as u64)?
            {
                prologues.insert(code.to_vec());
            }
        }
    }
    Ok(Inputs {
        bases: Vec::new(),
        seeds: prologues.into_iter().collect(),
    })
}

/// `sched_globals`: the code of `runtime.schedtrace` at its address, with the
/// index of its Go version among `layout_versions` (the layouts table's keys).
pub fn sched_globals(binaries: &[&Binary], layout_versions: &[String]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for binary in binaries {
        let file = object::File::parse(&*binary.data)?;
        let Some(version) = layout_versions.iter().position(|v| *v == binary.version) else {
            continue;
        };
        let Some(symbol) = file
            .symbols()
            .find(|s| s.name() == Ok("runtime.schedtrace"))
        else {
            continue; // stripped
        };
        if let Some(code) = code(&file, &symbol, symbol.size())? {
            let mut seed = vec![version as u8];
            seed.extend(symbol.address().to_le_bytes());
            seed.extend(code);
            inputs.seeds.push(seed);
        }
    }
    Ok(inputs)
}

/// The first `len` bytes at a function symbol's address.
fn code<'data>(
    file: &object::File<'data>,
    symbol: &object::Symbol<'data, '_>,
    len: u64,
) -> Result<Option<&'data [u8]>> {
    let Some(index) = symbol.section_index() else {
        return Ok(None);
    };
    let section = file.section_by_index(index)?;
    Ok(section.data_range(symbol.address(), len)?)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
