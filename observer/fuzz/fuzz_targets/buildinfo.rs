//! `.go.buildinfo` (`buildinfo::parse`), the section bytes as they are, and what
//! is read from the result.
#![no_main]

use gobpf_sched::binary::buildinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|section: &[u8]| {
    if let Ok(info) = buildinfo::parse(section) {
        let _ = buildinfo::major_minor(&info.go_version);
        let _ = (info.package_path(), info.module(), info.settings());
    }
});
