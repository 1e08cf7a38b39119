//! `runtime.sched` and `runtime.allp` from the code of `runtime.schedtrace`
//! (`sched_globals::rip_relative_reads`, `find`). Input: a byte choosing the Go
//! version whose `schedt` offsets (from the layouts table) to match, the code's
//! link-time address (u64, little-endian), the code.
#![no_main]

use gobpf_sched::binary::{layouts, sched_globals};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&version, rest)) = input.split_first() else {
        return;
    };
    let Some((address, code)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let versions: Vec<&layouts::Layout> = layouts::table().versions.values().collect();
    let layout = versions[usize::from(version) % versions.len()];
    let reads = sched_globals::rip_relative_reads(code, u64::from_le_bytes(*address));
    let fields = sched_globals::schedtrace_fields(&layout.struct_offsets);
    let _ = sched_globals::find(&reads, &fields);
});
