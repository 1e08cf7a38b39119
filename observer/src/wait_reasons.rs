//! Names of wait reasons as this exact binary spells them.
//!
//! `gopark` records a `waitReason`, a uint8 whose numbering changes between Go
//! versions; the binary carries `runtime.waitReasonStrings`, the names indexed by
//! it (read by `binary`, or taken from the per-version table when stripped).

/// The name to show for reason `index`.
pub fn name(names: &[String], index: usize) -> String {
    match names.get(index) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("reason {index}"),
    }
}
