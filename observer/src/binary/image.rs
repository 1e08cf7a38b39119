//! The file's bytes as the loader maps them: link-time addresses to file
//! offsets, pointers (with their dynamic relocation in a PIE), Go strings.

use anyhow::{Context, Result};
use object::Object;

/// A mapped piece of the file: `[vaddr, vaddr + filesz)` comes from `file_offset`.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub vaddr: u64,
    pub file_offset: u64,
    pub file_size: u64,
}

pub fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size)
        .map(|s| vaddr - s.vaddr + s.file_offset)
}

/// The file's bytes as the loader maps them.
pub struct Image<'a, 'data> {
    pub data: &'data [u8],
    pub segments: &'a [Segment],
    pub file: &'a object::File<'data>,
}

impl Image<'_, '_> {
    pub fn bytes(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(file_offset(self.segments, vaddr)?).ok()?;
        self.data
            .get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    /// The file's bytes from `vaddr` to the end of the segment that maps it.
    pub fn bytes_to_segment_end(&self, vaddr: u64) -> Option<&[u8]> {
        let segment = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size)?;
        let start =
            usize::try_from((vaddr - segment.vaddr).checked_add(segment.file_offset)?).ok()?;
        let end = usize::try_from(segment.file_offset.checked_add(segment.file_size)?).ok()?;
        self.data.get(start..end)
    }

    /// A pointer stored at `vaddr`: the file holds its link-time value, except in
    /// a position-independent binary whose linker left only the relocation.
    pub fn pointer(&self, vaddr: u64) -> Option<u64> {
        let stored = u64::from_le_bytes(self.bytes(vaddr, 8)?.try_into().ok()?);
        if stored != 0 {
            return Some(stored);
        }
        self.file
            .dynamic_relocations()?
            .find(|(offset, _)| *offset == vaddr)
            .map(|(_, relocation)| relocation.addend() as u64)
    }

    /// `count` Go strings (pointer, length) stored from `vaddr` on.
    pub fn go_strings(&self, vaddr: u64, count: u64) -> Result<Vec<String>> {
        anyhow::ensure!(
            (1..=256).contains(&count),
            "{count} strings is not a wait-reason table"
        );
        (0..count)
            .map(|i| {
                let header = vaddr
                    .checked_add(16 * i)
                    .context("string header outside the address space")?;
                let len = u64::from_le_bytes(
                    header
                        .checked_add(8)
                        .and_then(|len_field| self.bytes(len_field, 8))
                        .context("string header outside the file")?
                        .try_into()?,
                );
                if len == 0 {
                    return Ok(String::new());
                }
                anyhow::ensure!(len <= 256, "a string of {len} bytes is not a wait reason");
                let data = self
                    .pointer(header)
                    .context("string pointer outside the file")?;
                let bytes = self.bytes(data, len).context("string outside the file")?;
                Ok(String::from_utf8_lossy(bytes).into_owned())
            })
            .collect()
    }
}
