//! The executable's bytes: read only from a regular file, bounded in size, and
//! checked whole before anything parses them.
//!
//! The file is read into memory rather than memory-mapped: a mapping needs
//! `unsafe`, and a file shortened by another process while mapped turns a read
//! into SIGBUS, a crash instead of an error. The bytes are only held while the
//! binary is parsed (code is read again on demand), so a read costs the file's
//! size for a moment; [`MAX_SIZE`] bounds that.

use std::{fs::OpenOptions, io::Read, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::{Context, Result, bail};
use object::{
    Endianness, FileKind,
    elf::{FileHeader32, FileHeader64, SHT_NOBITS},
    read::elf::{FileHeader, ProgramHeader, SectionHeader},
};

/// The largest executable read. Go binaries are tens of MB, a few hundred with
/// DWARF; anything larger than this is not one, and reading it would only
/// exhaust memory.
pub const MAX_SIZE: u64 = 4 << 30;

/// The bytes of the regular file `path` (`/proc/PID/exe` and other symlinks are
/// followed). A device, FIFO or directory is refused before anything is read:
/// `/dev/zero` would never end.
pub fn read(path: &Path, shown_as: &str) -> Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer. It changes nothing
    // for a regular file.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot read {shown_as}"))?;
    // The opened file's own metadata: what is checked is what is read.
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read {shown_as}"))?;
    if !metadata.is_file() {
        bail!("{shown_as} is not a regular file");
    }
    let size = metadata.len();
    if size > MAX_SIZE {
        bail!(
            "{shown_as} is {size} bytes, more than the {} GiB an executable may have here",
            MAX_SIZE >> 30
        );
    }
    let mut data = Vec::with_capacity(usize::try_from(size)?);
    // Up to the size just checked, even if the file grows meanwhile.
    file.by_ref()
        .take(size)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {shown_as}"))?;
    Ok(data)
}

/// Fails when the ELF headers in `data` describe sections or segments past its
/// end: a truncated file (a copy cut short, a download in progress). Checked
/// before parsing deeper, where it would show as some table's invalid data. Not
/// an ELF file at all is left to the parser to say.
pub fn check_whole(data: &[u8], shown_as: &str) -> Result<()> {
    let described = match FileKind::parse(data) {
        Ok(FileKind::Elf64) => described_len::<FileHeader64<Endianness>>(data),
        Ok(FileKind::Elf32) => described_len::<FileHeader32<Endianness>>(data),
        _ => None,
    };
    match described {
        Some(described) if described > data.len() as u64 => bail!(
            "{shown_as} is truncated: the file ends before the sections and segments its \
             ELF headers describe ({} bytes; the ELF headers describe {described})",
            data.len()
        ),
        _ => Ok(()),
    }
}

/// How many bytes the ELF headers say the file has: the end of the furthest
/// header table, segment or section with file contents.
fn described_len<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Option<u64> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let end = |offset: u64, size: u64| offset.saturating_add(size);
    let table = |offset: Elf::Word, count: u16, entry_size: u16| {
        end(offset.into(), u64::from(count) * u64::from(entry_size))
    };
    let mut described = table(
        header.e_phoff(endian),
        header.e_phnum(endian),
        header.e_phentsize(endian),
    )
    .max(table(
        header.e_shoff(endian),
        header.e_shnum(endian),
        header.e_shentsize(endian),
    ));
    // The tables themselves may be past the end: then they were counted above.
    for segment in header.program_headers(endian, data).unwrap_or_default() {
        let (offset, size) = (segment.p_offset(endian), segment.p_filesz(endian));
        if size.into() > 0 {
            described = described.max(end(offset.into(), size.into()));
        }
    }
    for section in header.section_headers(endian, data).unwrap_or_default() {
        let (offset, size) = (section.sh_offset(endian), section.sh_size(endian));
        if section.sh_type(endian) != SHT_NOBITS && size.into() > 0 {
            described = described.max(end(offset.into(), size.into()));
        }
    }
    Some(described)
}
