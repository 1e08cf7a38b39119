//! Whole-ELF parse (`GoBinary::parse`) of real Go binaries with a window
//! replaced: headers, symbol tables, build info, function table, DWARF, the
//! wait-reason strings and the code of `runtime.schedtrace`, all at once; then
//! the source-line tables (`SourceLines`) of what parsed, at a spread of addresses.
#![no_main]

use std::path::Path;

use gobpf_sched::binary::GoBinary;
use gobpf_sched_fuzz::with_window;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    with_window(input, |data| {
        // The path is only read again for code bytes, after parsing.
        let Ok(binary) = GoBinary::parse(Path::new("/nonexistent"), data, "fuzzed") else {
            return;
        };
        let Ok(lines) = binary.source_lines_from(data) else {
            return;
        };
        let functions = binary.functions_by_entry();
        // Entries and a byte inside of a spread of functions: every pc-value table,
        // inline tree and file table they reach is decoded.
        for (entry, _) in functions.iter().step_by(functions.len() / 64 + 1) {
            let _ = lines.frames_at(*entry);
            let _ = lines.frames_at(entry.wrapping_add(9));
        }
    });
});
