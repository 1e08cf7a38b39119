//! Names what the kernel reports by number: wait reasons, code addresses.
//!
//! `gopark` records a `waitReason`, a uint8 whose numbering changes between Go
//! versions; the binary carries `runtime.waitReasonStrings`, the names indexed by
//! it (read by `binary`, or taken from the per-version table when stripped).
//! Code addresses are named through the binary's function table.

pub struct Names<'a> {
    /// Wait-reason names, indexed by reason.
    pub reasons: &'a [String],
    /// The function at a run-time code address.
    pub function_at: &'a dyn Fn(u64) -> Option<String>,
    /// Whether a word found on the stack is a return address from a direct
    /// call of the function containing a code address (run-time addresses:
    /// `(pc, word)`): how a CPU sample finds the caller of a function
    /// without a frame.
    pub returns_from: &'a dyn Fn(u64, u64) -> bool,
}

impl Names<'_> {
    /// The name to show for wait reason `index`.
    pub fn reason(&self, index: u64) -> String {
        reason_name(self.reasons, index)
    }

    /// The function containing run-time address `pc`, when it is Go code.
    pub fn function(&self, pc: u64) -> Option<String> {
        (self.function_at)(pc)
    }
}

/// The name to show for wait reason `index` among `reasons`.
pub fn reason_name(reasons: &[String], index: u64) -> String {
    match reasons.get(index as usize) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("reason {index}"),
    }
}
