//! Where `runtime.sched` and `runtime.allp` are in a binary without a symbol
//! table (`-ldflags=-s`), found in the code that prints them.
//!
//! `runtime.schedtrace` (what `GODEBUG=schedtrace` runs; present in every
//! binary) reads `sched.npidle`, `sched.nmspinning`, `sched.nmidle`, the run-queue
//! size, `mcount()`'s `sched.mnext - sched.nmfreed`, and ranges over `allp`
//! (its pointer and its length 8 bytes further). Each of those reads is a
//! RIP-relative operand, i.e. a link-time address. With the field offsets of
//! `schedt` (DWARF or the layouts table), the base address for which the most
//! fields line up with those operands is `runtime.sched`; `allp` is an operand
//! read as a word together with the word 8 bytes after it, outside `sched`.

use std::collections::{BTreeMap, BTreeSet};

use iced_x86::{Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind};

use crate::binary::fields;

/// `schedt` fields schedtrace reads, as offsets; at least this many of them
/// must line up for an answer.
const MIN_FIELDS_MATCHED: usize = 4;

/// Offsets of the `schedt` fields schedtrace reads.
pub fn schedtrace_fields(struct_offsets: &BTreeMap<String, u64>) -> Vec<u64> {
    let mut offsets: Vec<u64> = [
        fields::SCHED_NPIDLE,
        fields::SCHED_NMSPINNING,
        fields::SCHED_NMIDLE,
        fields::SCHED_MNEXT,
        fields::SCHED_NMFREED,
    ]
    .iter()
    .filter_map(|f| f.offset_in(struct_offsets))
    .collect();
    offsets.extend(fields::runq_size_offset(struct_offsets));
    offsets
}

/// Memory the code at link-time `address` reads through RIP-relative operands:
/// link-time address → sizes read there (8 for a word, 0 for anything else) (`lea` computes an address, reads
/// nothing, and is left out: string constants are taken that way).
pub fn rip_relative_reads(code: &[u8], address: u64) -> BTreeMap<u64, BTreeSet<usize>> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut reads: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for instruction in &mut decoder {
        if instruction.is_invalid() || instruction.mnemonic() == Mnemonic::Lea {
            continue;
        }
        let has_memory =
            (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory);
        if has_memory && instruction.is_ip_rel_memory_operand() {
            reads
                .entry(instruction.ip_rel_memory_address())
                .or_default()
                .insert(match instruction.memory_size() {
                    MemorySize::UInt64 | MemorySize::Int64 => 8,
                    _ => 0, // smaller or other: enough for the field match
                });
        }
    }
    reads
}

/// `sched_fields`: offsets of the `schedt` fields schedtrace reads. Returns the
/// link-time addresses of `runtime.sched` and `runtime.allp`.
pub fn find(reads: &BTreeMap<u64, BTreeSet<usize>>, sched_fields: &[u64]) -> Option<(u64, u64)> {
    let targets: BTreeSet<u64> = reads.keys().copied().collect();
    let fields: BTreeSet<u64> = sched_fields.iter().copied().collect();
    // Every (operand, field) pair proposes a base; count distinct fields per base.
    let mut best: Option<(usize, u64)> = None;
    for &target in &targets {
        for &field in &fields {
            let Some(base) = target.checked_sub(field) else {
                continue;
            };
            // Addresses past 2^64 are not in the code's reads (corrupt operands can
            // come close: found by fuzzing).
            let matched = fields
                .iter()
                .filter(|&&f| base.checked_add(f).is_some_and(|a| targets.contains(&a)))
                .count();
            if best.is_none_or(|(count, _)| matched > count) {
                best = Some((matched, base));
            }
        }
    }
    let (matched, sched) = best?;
    if matched < MIN_FIELDS_MATCHED {
        return None;
    }
    let sched_end = sched.saturating_add(fields.iter().max().copied().unwrap_or(0) + 8);
    let allp = only_slice(reads, Some(sched..sched_end))?;
    Some((sched, allp))
}

/// The one slice the code reads, outside `besides`: 8 bytes read at its address
/// (the array) and 8 bytes on (the length). None when there is none or more
/// than one (ambiguous: better no answer than a wrong one).
pub fn only_slice(
    reads: &BTreeMap<u64, BTreeSet<usize>>,
    besides: Option<std::ops::Range<u64>>,
) -> Option<u64> {
    let reads_word = |at: u64| reads.get(&at).is_some_and(|sizes| sizes.contains(&8));
    let mut slices = reads.keys().copied().filter(|&t| {
        !besides.as_ref().is_some_and(|range| range.contains(&t))
            && reads_word(t)
            && t.checked_add(8).is_some_and(reads_word)
    });
    let slice = slices.next()?;
    if slices.next().is_some() {
        return None;
    }
    Some(slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operands just below 2^64 must not match fields at small addresses by
    /// wrapping around (the fuzz finding in tests/fuzz-regressions/sched_globals
    /// panicked there with overflow checks; without them it matched like this).
    #[test]
    fn addresses_do_not_wrap_around() {
        let fields = [48, 56, 72, 96, 100, 112];
        let base = u64::MAX - 55;
        let mut reads: BTreeMap<u64, BTreeSet<usize>> = [base + 48]
            .into_iter()
            .chain([56, 72, 96, 100].map(|f| f - 56)) // base + f, wrapped
            .map(|at| (at, BTreeSet::from([0])))
            .collect();
        reads.insert(0x1000, BTreeSet::from([8]));
        reads.insert(0x1008, BTreeSet::from([8]));
        assert_eq!(find(&reads, &fields), None);
    }
}
