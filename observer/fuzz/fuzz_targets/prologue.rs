//! Where a function's uprobe goes (`prologue::probe_site`), from its first bytes.
#![no_main]

use gobpf_sched::binary::prologue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|code: &[u8]| {
    let site = prologue::probe_site(code);
    assert!(site.offset as usize <= code.len(), "{site:?} past the code");
});
