//! Whole-ELF parse (`GoBinary::parse`) of real Go binaries with a window
//! replaced: headers, symbol tables, build info, function table, DWARF, the
//! wait-reason strings and the code of `runtime.schedtrace`, all at once.
#![no_main]

use std::path::Path;

use gobpf_sched::binary::GoBinary;
use gobpf_sched_fuzz::with_window;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    with_window(input, |data| {
        // The path is only read again for code bytes, after parsing.
        let _ = GoBinary::parse(Path::new("/nonexistent"), data, "fuzzed");
    });
});
