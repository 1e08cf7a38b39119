//! Runtime struct member offsets from the DWARF (`dwarf::member_offsets`) of real
//! Go binaries built with uncompressed DWARF, with a window replaced.
#![no_main]

use gobpf_sched::binary::{dwarf, fields};
use gobpf_sched_fuzz::with_window;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    with_window(input, |data| {
        if let Ok(file) = object::File::parse(data) {
            let _ = dwarf::member_offsets(&file, fields::ALL);
        }
    });
});
