//! Function names and entry addresses from `.gopclntab`, the function table every
//! Go binary keeps for the runtime's own use (stack traces, GC), stripped or not.
//!
//! Layout for Go 1.18 and later (`runtime/symtab.go`, `pcHeader`):
//!
//! ```text
//! magic u32 (0xfffffff0: Go 1.18-1.19, 0xfffffff1: Go 1.20+) · 0 · 0 · minLC u8 · ptrSize u8
//! nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset   (ptrSize each)
//! ```
//!
//! At `pclnOffset` the function table holds `nfunc` pairs `(entryOff u32, funcOff u32)`
//! and a final `entryOff`; the `_func` record at `pclnOffset + funcOff` begins with
//! `entryOff u32, nameOff i32`, and the name is a NUL-terminated string at
//! `funcnameOffset + nameOff`. Entry addresses are `textStart + entryOff`.
//!
//! Source positions (for `source_lines`) come from the other tables the header
//! points to: the per-function `_func` record (`runtime/runtime2.go`), its
//! pc-value tables in `pctab` (decoded by `step` in `runtime/symtab.go`), and the
//! file names through `cutab` and `filetab` (`funcfile` in `runtime/symtab.go`).
//!
//! Every read is bounds-checked: a truncated or corrupted table is an error, never
//! a panic.

use anyhow::{Context, Result, bail, ensure};
use object::{Object, ObjectSection};

use super::image::Image;

pub const MAGIC_GO118: u32 = 0xffff_fff0;
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// The parsed header and the table's bytes.
pub struct Pclntab<'data> {
    data: &'data [u8],
    nfunc: usize,
    /// As stored in the header: 0 from Go 1.26 on (the runtime takes it from
    /// `moduledata.text`), and in a PIE binary whose linker left it to the loader.
    pub text_start: u64,
    /// `MAGIC_GO118` or `MAGIC_GO120`: which `_func` and `inlinedCall` layout.
    pub magic: u32,
    funcname_offset: usize,
    cu_offset: usize,
    filetab_offset: usize,
    pctab_offset: usize,
    functab_offset: usize,
}

/// The fields of a `_func` record that source positions need (`runtime/runtime2.go`):
///
/// ```text
/// Go 1.18-1.19: entryOff u32 · nameOff i32 · args i32 · deferreturn u32 · pcsp u32 ·
///               pcfile u32 · pcln u32 · npcdata u32 · cuOffset u32 · funcID u8 ·
///               flag u8 · pad u8 · nfuncdata u8                       (40 bytes)
/// Go 1.20+:     the same with startLine i32 after cuOffset            (44 bytes)
/// ```
///
/// followed by `pcdata [npcdata]u32` (offsets into `pctab`, 0: no table) and
/// `funcdata [nfuncdata]u32` (offsets from `moduledata.gofunc`, `^0`: none).
#[derive(Debug, Clone, Copy)]
pub struct FuncRecord {
    pub entry_off: u32,
    pub name_off: i32,
    pub pcfile: u32,
    pub pcln: u32,
    pub npcdata: u32,
    pub cu_offset: u32,
    /// Line of the `func` keyword (Go 1.20+; 0 before).
    pub start_line: i32,
    pub nfuncdata: u8,
    /// Offset in the table of `pcdata[0]`.
    pcdata_at: usize,
}

/// Offset of the `textStart` word within the header.
const TEXT_START_WORD: usize = 8 + 2 * 8;

impl<'data> Pclntab<'data> {
    pub fn parse(data: &'data [u8]) -> Result<Self> {
        ensure!(
            data.len() >= 8 + 8 * 8,
            ".gopclntab is too short for its header"
        );
        let magic = read_u32(data, 0)?;
        ensure!(
            magic == MAGIC_GO118 || magic == MAGIC_GO120,
            ".gopclntab has magic {magic:#x}, not one of Go 1.18 or later"
        );
        ensure!(
            data[4] == 0 && data[5] == 0 && data[7] == 8,
            ".gopclntab header is not that of a 64-bit Go binary"
        );
        let word = |index: usize| read_u64(data, 8 + 8 * index);
        let nfunc = usize::try_from(word(0)?)?;
        let funcname_offset = usize::try_from(word(3)?)?;
        let cu_offset = usize::try_from(word(4)?)?;
        let filetab_offset = usize::try_from(word(5)?)?;
        let pctab_offset = usize::try_from(word(6)?)?;
        let functab_offset = usize::try_from(word(7)?)?;
        // The function table must fit: (nfunc * 2 + 1) u32 words.
        let functab_len = nfunc
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .context(".gopclntab function count overflows")?;
        ensure!(
            functab_offset
                .checked_add(functab_len)
                .is_some_and(|end| end <= data.len())
                && funcname_offset < data.len(),
            ".gopclntab offsets point past its end"
        );
        Ok(Self {
            data,
            nfunc,
            text_start: word(2)?,
            magic,
            funcname_offset,
            cu_offset,
            filetab_offset,
            pctab_offset,
            functab_offset,
        })
    }

    /// Byte offset of the `textStart` word in the section, for finding the
    /// dynamic relocation that fills it in a PIE binary.
    pub fn text_start_field() -> u64 {
        TEXT_START_WORD as u64
    }

    /// The table's bytes, from its header on.
    pub fn bytes(&self) -> &'data [u8] {
        self.data
    }

    /// Offset of the function-name table from the start of the section.
    pub fn funcname_offset(&self) -> u64 {
        self.funcname_offset as u64
    }

    pub fn function_count(&self) -> usize {
        self.nfunc
    }

    /// `(name, entry offset from textStart)` of every function whose name `wanted`
    /// accepts.
    pub fn functions(&self, mut wanted: impl FnMut(&[u8]) -> bool) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for index in 0..self.nfunc {
            let pair = self.functab_offset + index * 8;
            let entry_off = read_u32(self.data, pair)?;
            let func_off = usize::try_from(read_u32(self.data, pair + 4)?)?;
            let record = self
                .functab_offset
                .checked_add(func_off)
                .context(".gopclntab _func offset overflows")?;
            let name_off = read_u32(self.data, record + 4)? as i32;
            let name = self.name_at(name_off)?;
            if wanted(name) {
                out.push((
                    String::from_utf8_lossy(name).into_owned(),
                    u64::from(entry_off),
                ));
            }
        }
        Ok(out)
    }

    /// Offset from textStart of the end of the last function (the table's
    /// final `entryOff`).
    pub fn end_offset(&self) -> Result<u64> {
        Ok(u64::from(read_u32(
            self.data,
            self.functab_offset + self.nfunc * 8,
        )?))
    }

    /// The function table: `(entryOff, funcOff)` of every function, in the
    /// table's order (by entry).
    pub fn function_table(&self) -> Result<Vec<(u32, u32)>> {
        (0..self.nfunc)
            .map(|index| {
                let pair = self.functab_offset + index * 8;
                Ok((read_u32(self.data, pair)?, read_u32(self.data, pair + 4)?))
            })
            .collect()
    }

    /// The `_func` record at `func_off` (the second word of a function-table pair).
    pub fn func_record(&self, func_off: u32) -> Result<FuncRecord> {
        let at = self
            .functab_offset
            .checked_add(usize::try_from(func_off)?)
            .context(".gopclntab _func offset overflows")?;
        let word = |index: usize| read_u32(self.data, at + 4 * index);
        // Go 1.20 inserted startLine before funcID (runtime/runtime2.go).
        let (start_line, flags_word) = if self.magic == MAGIC_GO118 {
            (0, 9)
        } else {
            (word(9)? as i32, 10)
        };
        let record = FuncRecord {
            entry_off: word(0)?,
            name_off: word(1)? as i32,
            pcfile: word(5)?,
            pcln: word(6)?,
            npcdata: word(7)?,
            cu_offset: word(8)?,
            start_line,
            // funcID u8 · flag u8 · pad u8 · nfuncdata u8: the last byte.
            nfuncdata: word(flags_word)?.to_le_bytes()[3],
            pcdata_at: at + 4 * (flags_word + 1),
        };
        Ok(record)
    }

    /// The function name at `name_off` in the name table.
    pub fn name(&self, name_off: i32) -> Result<String> {
        Ok(String::from_utf8_lossy(self.name_at(name_off)?).into_owned())
    }

    /// Offset into `pctab` of the function's pcdata table `index`, 0 when it has none
    /// (`pcdatastart`, `pcdatavalue` in `runtime/symtab.go`).
    pub fn pcdata_offset(&self, func: &FuncRecord, index: u32) -> Result<u32> {
        if index >= func.npcdata {
            return Ok(0);
        }
        read_u32(self.data, func.pcdata_at + 4 * usize::try_from(index)?)
    }

    /// The function's funcdata word `index`: an offset from `moduledata.gofunc`,
    /// None when absent (`^0`, or `index` past `nfuncdata`; `funcdata` in
    /// `runtime/symtab.go`).
    pub fn funcdata_offset(&self, func: &FuncRecord, index: u8) -> Result<Option<u32>> {
        if index >= func.nfuncdata {
            return Ok(None);
        }
        let at = usize::try_from(func.npcdata)?
            .checked_add(usize::from(index))
            .and_then(|words| words.checked_mul(4))
            .and_then(|bytes| bytes.checked_add(func.pcdata_at))
            .context(".gopclntab funcdata offset overflows")?;
        let offset = read_u32(self.data, at)?;
        Ok((offset != u32::MAX).then_some(offset))
    }

    /// The value of the pc-value table at `off` in `pctab` for the pc `target` of
    /// the function starting at `entry`; -1 when there is no table or it does not
    /// cover `target` (`pcvalue`, non-strict, in `runtime/symtab.go`).
    pub fn pcvalue(&self, off: u32, entry: u64, target: u64) -> i32 {
        if off == 0 {
            return -1;
        }
        let Some(mut p) = self
            .pctab_offset
            .checked_add(off as usize)
            .and_then(|start| self.data.get(start..))
        else {
            return -1;
        };
        let mut pc = entry;
        let mut val: i32 = -1;
        // Each step consumes at least two bytes: the loop ends with the data.
        loop {
            let first = pc == entry;
            let Some(rest) = step(p, &mut pc, &mut val, first) else {
                break;
            };
            if target < pc {
                return val;
            }
            p = rest;
        }
        -1
    }

    /// The name of file `fileno` of the compilation unit at `cu_offset`, None when
    /// the table says it has none (`funcfile` in `runtime/symtab.go`).
    pub fn file_name(&self, cu_offset: u32, fileno: i32) -> Option<String> {
        let index = cu_offset.checked_add(u32::try_from(fileno).ok()?)?;
        let entry = self
            .cu_offset
            .checked_add(usize::try_from(index).ok()?.checked_mul(4)?)?;
        let file_off = read_u32(self.data, entry).ok()?;
        if file_off == u32::MAX {
            return None;
        }
        let start = self.filetab_offset.checked_add(file_off as usize)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..len]).into_owned())
    }

    fn name_at(&self, name_off: i32) -> Result<&'data [u8]> {
        let start = usize::try_from(name_off)
            .ok()
            .and_then(|off| self.funcname_offset.checked_add(off))
            .filter(|&start| start < self.data.len())
            .context(".gopclntab function name offset is out of range")?;
        let rest = &self.data[start..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .context(".gopclntab function name is not terminated")?;
        Ok(&rest[..len])
    }
}

/// One (value, pc) step of a pc-value table: the value delta is a zigzag varint,
/// the pc delta a varint in units of `PCQuantum` (1 on amd64); a zero value delta
/// ends the table except at the first step (`step` and `readvarint` in
/// `runtime/symtab.go`). Returns the rest of the table, None at its end (or when
/// it is truncated).
fn step<'a>(p: &'a [u8], pc: &mut u64, val: &mut i32, first: bool) -> Option<&'a [u8]> {
    let (uvdelta, p) = read_varint(p)?;
    if uvdelta == 0 && !first {
        return None;
    }
    // Zigzag: the runtime's `-(uvdelta & 1) ^ (uvdelta >> 1)`, in wrapping u32.
    let vdelta = (uvdelta & 1).wrapping_neg() ^ (uvdelta >> 1);
    *val = val.wrapping_add(vdelta as i32);
    let (pcdelta, p) = read_varint(p)?;
    *pc = pc.wrapping_add(u64::from(pcdelta));
    Some(p)
}

/// A little-endian base-128 varint, as the runtime reads it: `shift & 31`, so
/// bytes past the fifth wrap around rather than fail.
fn read_varint(p: &[u8]) -> Option<(u32, &[u8])> {
    let mut value = 0u32;
    let mut shift = 0u32;
    for (index, &byte) in p.iter().enumerate() {
        value |= u32::from(byte & 0x7f) << (shift & 31);
        if byte & 0x80 == 0 {
            return Some((value, &p[index + 1..]));
        }
        shift = shift.wrapping_add(7);
    }
    None
}

fn read_u32(data: &[u8], at: usize) -> Result<u32> {
    let bytes = at
        .checked_add(4)
        .and_then(|end| data.get(at..end))
        .context(".gopclntab is truncated")?;
    Ok(u32::from_le_bytes(bytes.try_into()?))
}

fn read_u64(data: &[u8], at: usize) -> Result<u64> {
    let bytes = at
        .checked_add(8)
        .and_then(|end| data.get(at..end))
        .context(".gopclntab is truncated")?;
    Ok(u64::from_le_bytes(bytes.try_into()?))
}

/// The function table of a binary: where it is mapped, its parsed header, and
/// the address its entry offsets count from.
pub struct Located<'data> {
    pub vaddr: u64,
    pub table: Pclntab<'data>,
    pub text_start: u64,
}

/// Finds the function table and the start of Go code: the header's `textStart`,
/// else its dynamic relocation (PIE), else `runtime.firstmoduledata.text`
/// (Go 1.26+, where the header no longer keeps it). `moduledata_text` is the
/// offset of `text` in `runtime.moduledata`.
pub fn locate<'data>(
    image: &Image<'_, 'data>,
    moduledata_text: Option<u64>,
) -> Result<Located<'data>> {
    let (vaddr, table) = find_pclntab(image.file)?;
    let mut text_start = table.text_start;
    if text_start == 0 {
        text_start = vaddr
            .checked_add(Pclntab::text_start_field())
            .and_then(|field| image.pointer(field))
            .unwrap_or(0);
    }
    if text_start == 0
        && let Some(text_field) = moduledata_text
    {
        text_start = find_moduledata(image, vaddr, &table)
            .and_then(|moduledata| image.pointer(moduledata.checked_add(text_field)?))
            .unwrap_or(0);
    }
    if text_start == 0 {
        bail!(".gopclntab has no text start address");
    }
    Ok(Located {
        vaddr,
        table,
        text_start,
    })
}

/// Every function's (name, entry) from `.gopclntab`, and where the last one ends.
/// `moduledata_text` is the offset of `text` in `runtime.moduledata`.
pub fn all_functions(
    image: &Image<'_, '_>,
    moduledata_text: Option<u64>,
) -> Result<(Vec<(String, u64)>, u64)> {
    let Located {
        table, text_start, ..
    } = locate(image, moduledata_text)?;
    // Every address is checked: a corrupt text start near 2^64 would wrap the
    // entries around (the elf fuzz target panics there with overflow checks).
    let entry = |offset: u64| {
        text_start
            .checked_add(offset)
            .context(".gopclntab puts functions past the end of the address space")
    };
    let functions = table
        .functions(|_| true)?
        .into_iter()
        .map(|(name, offset)| Ok((name, entry(offset)?)))
        .collect::<Result<_>>()?;
    Ok((functions, entry(table.end_offset()?)?))
}

/// The link-time address of `runtime.firstmoduledata`, found by its first two
/// words: the address of the pcHeader and of the function-name table after it
/// (`moduledata` in `runtime/symtab.go`).
pub fn find_moduledata(
    image: &Image<'_, '_>,
    pclntab_vaddr: u64,
    table: &Pclntab<'_>,
) -> Option<u64> {
    let mut signature = pclntab_vaddr.to_le_bytes().to_vec();
    signature.extend(
        pclntab_vaddr
            .checked_add(table.funcname_offset())?
            .to_le_bytes(),
    );
    for section in image.file.sections() {
        if section.address() == 0
            || !matches!(
                section.kind(),
                object::SectionKind::Data | object::SectionKind::ReadOnlyData
            )
        {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        if let Some(word) = (0..data.len() / 8).find(|&i| data[i * 8..].starts_with(&signature)) {
            return section.address().checked_add(8 * word as u64);
        }
    }
    None
}

/// The function table: its own section (internal linking), or inside `.data.rel.ro`
/// where an external linker merged it (cgo with -buildmode=pie).
fn find_pclntab<'data>(file: &object::File<'data>) -> Result<(u64, Pclntab<'data>)> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(section) = file.section_by_name(name) {
            return Ok((section.address(), Pclntab::parse(section.data()?)?));
        }
    }
    for name in [".data.rel.ro", ".rodata"] {
        let Some(section) = file.section_by_name(name) else {
            continue;
        };
        let data = section.data()?;
        for magic in [MAGIC_GO120, MAGIC_GO118] {
            let mut header = magic.to_le_bytes().to_vec();
            header.extend([0, 0, 1, 8]); // two zero bytes, minLC 1, 8-byte pointers
            let mut from = 0;
            while let Some(at) = find(&data[from..], &header) {
                let at = from + at;
                if let Ok(table) = Pclntab::parse(&data[at..])
                    && table.function_count() > 0
                    && let Some(address) = section.address().checked_add(at as u64)
                {
                    return Ok((address, table));
                }
                from = at + 1;
            }
        }
    }
    bail!("no .gopclntab found")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
