//! `.gopclntab` (`Pclntab`) of real Go binaries with a window replaced: the
//! header, the function table and the names it points to.
#![no_main]

use gobpf_sched::binary::pclntab::Pclntab;
use gobpf_sched_fuzz::with_window;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    with_window(input, |data| {
        if let Ok(table) = Pclntab::parse(data) {
            let _ = table.functions(|_| true);
            let _ = table.end_offset();
        }
    });
});
