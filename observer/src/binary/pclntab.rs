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
    funcname_offset: usize,
    functab_offset: usize,
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
            funcname_offset,
            functab_offset,
        })
    }

    /// Byte offset of the `textStart` word in the section, for finding the
    /// dynamic relocation that fills it in a PIE binary.
    pub fn text_start_field() -> u64 {
        TEXT_START_WORD as u64
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

/// Every function's (name, entry) from `.gopclntab`, and where the last one ends.
/// `moduledata_text` is the offset of `text` in `runtime.moduledata`.
pub fn all_functions(
    image: &Image<'_, '_>,
    moduledata_text: Option<u64>,
) -> Result<(Vec<(String, u64)>, u64)> {
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
        text_start = text_start_from_moduledata(image, vaddr, &table, text_field).unwrap_or(0);
    }
    if text_start == 0 {
        bail!(".gopclntab has no text start address");
    }
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

/// Where Go code starts, from `runtime.firstmoduledata`, found by its first two
/// words: the address of the pcHeader and of the function-name table after it.
fn text_start_from_moduledata(
    image: &Image<'_, '_>,
    pclntab_vaddr: u64,
    table: &Pclntab<'_>,
    text_field: u64,
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
            let moduledata = section.address().checked_add(8 * word as u64)?;
            return image.pointer(moduledata.checked_add(text_field)?);
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
