//! What the window targets share: a real file with a window of it replaced by
//! the fuzzer's bytes.
//!
//! Whole Go binaries and their tables are megabytes, and libFuzzer is fast on
//! small inputs and mutates them where it likes. So a window target's input is
//! small and names where its bytes go:
//!
//! ```text
//! selector u8 · offset u32 (little-endian) · bytes
//! ```
//!
//! The low 7 bits of `selector` pick a base file (modulo their count, in name
//! order), its top bit cuts the file just after the window; `offset` (modulo
//! the base's length) is where `bytes` replace the base's own. The base files
//! are real (Go binaries, sections of them) and read from the directory
//! `$GOBPF_SCHED_FUZZ_BASES`; `cargo xtask fuzz` writes them, and seeds each
//! target with windows that hold the bases' own bytes at their headers and
//! tables, so the fuzzer starts from real structures.

use std::{
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

/// Names the directory of base files.
pub const BASES_ENV: &str = "GOBPF_SCHED_FUZZ_BASES";

/// Bytes before the window's contents: selector and offset.
pub const WINDOW_HEADER: usize = 5;

/// Runs `parse` on a base file with the window `input` describes in place.
pub fn with_window(input: &[u8], parse: impl FnOnce(&[u8])) {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let Some((offset, bytes)) = rest.split_first_chunk::<4>() else {
        return;
    };
    // One copy of each base, patched and restored in place: copying megabytes
    // for every input would cost more than most parses.
    let mut bases = bases().lock().unwrap_or_else(|poison| poison.into_inner());
    let count = bases.len();
    let base = &mut bases[usize::from(selector & 0x7f) % count];
    let at = u32::from_le_bytes(*offset) as usize % base.len();
    let window = at..at + bytes.len().min(base.len() - at);
    let own = base[window.clone()].to_vec();
    base[window.clone()].copy_from_slice(&bytes[..window.len()]);
    let end = if selector & 0x80 != 0 {
        window.end
    } else {
        base.len()
    };
    parse(&base[..end]);
    base[window].copy_from_slice(&own);
}

fn bases() -> &'static Mutex<Vec<Vec<u8>>> {
    static BASES: OnceLock<Mutex<Vec<Vec<u8>>>> = OnceLock::new();
    BASES.get_or_init(|| {
        let dir = std::env::var_os(BASES_ENV).map(PathBuf::from);
        let mut paths: Vec<PathBuf> = dir
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|entry| Some(entry.ok()?.path()))
            .collect();
        paths.sort();
        let files: Vec<Vec<u8>> = paths
            .iter()
            .filter_map(|path| std::fs::read(path).ok())
            .filter(|data| !data.is_empty())
            .collect();
        assert!(
            !files.is_empty(),
            "${BASES_ENV} ({dir:?}) names no directory of base files: run `cargo xtask fuzz`"
        );
        Mutex::new(files)
    })
}
