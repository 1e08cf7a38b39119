//! Names of wait reasons as this exact binary spells them.
//!
//! `gopark` records a `waitReason`, a uint8 whose numbering changes between Go
//! versions; the binary carries `runtime.waitReasonStrings`, an array of Go strings
//! indexed by it. It is read from the running process, where PIE relocations have
//! already been applied.

use anyhow::{Context, Result, ensure};

use crate::{binary::GoBinary, target::Target};

/// Size of a Go string header: data pointer and length.
const GO_STRING: usize = 16;

pub fn read(target: &Target, binary: &GoBinary, load_bias: u64) -> Result<Vec<String>> {
    let table = binary
        .symbol("runtime.waitReasonStrings")
        .context("the binary has no runtime.waitReasonStrings symbol")?;
    let count = table.size as usize / GO_STRING;
    ensure!(
        (1..=256).contains(&count),
        "runtime.waitReasonStrings has an unexpected size of {} bytes",
        table.size
    );
    let headers = target.read_memory(table.address.wrapping_add(load_bias), count * GO_STRING)?;
    headers
        .chunks_exact(GO_STRING)
        .map(|header| {
            let data = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(header[8..].try_into().unwrap_or_default());
            ensure!(len <= 256, "wait reason name of {len} bytes");
            if len == 0 {
                return Ok(String::new());
            }
            let bytes = target.read_memory(data, len as usize)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

/// The name to show for reason `index`.
pub fn name(names: &[String], index: usize) -> String {
    match names.get(index) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("reason {index}"),
    }
}
