//! Property tests of the binary parsers on real sections of real Go binaries:
//! every truncation and thousands of seeded random corruptions must give an
//! error or a result, never a panic (a panic here would be an out-of-bounds read:
//! every slice access is checked). Run with --nocapture to see the case counts.

mod common;

use std::path::Path;

use common::{Mode, build, toolchains};
use gobpf_sched::binary::{GoBinary, buildinfo, layouts, pclntab::Pclntab, sched_globals};
use object::{Object, ObjectSection};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A copy of `data` with 1 to 8 bytes overwritten, half of the time inside
    /// the first `hot` bytes (headers, where a wrong value reaches furthest).
    fn corrupt(&mut self, data: &[u8], hot: usize) -> Vec<u8> {
        let mut copy = data.to_vec();
        for _ in 0..1 + self.below(8) {
            let at = if self.next() & 1 == 0 {
                self.below(hot.min(copy.len()))
            } else {
                self.below(copy.len())
            };
            if let Some(byte) = copy.get_mut(at) {
                *byte = self.next() as u8;
            }
        }
        copy
    }
}

fn section(data: &[u8], names: &[&str]) -> Vec<u8> {
    let file = object::File::parse(data).unwrap();
    names
        .iter()
        .find_map(|name| file.section_by_name(name))
        .map(|s| s.data().unwrap().to_vec())
        .unwrap_or_default()
}

/// Parses a pcln table and lists its runtime functions, as the observer does.
fn read_pclntab(data: &[u8]) -> usize {
    match Pclntab::parse(data) {
        Ok(table) => table
            .functions(|name| name.starts_with(b"runtime."))
            .map(|f| f.len())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[test]
fn buildinfo_and_pclntab_survive_truncation_and_corruption() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0u64;
    for toolchain in toolchains() {
        for mode in [Mode::Default, Mode::Pie] {
            let data = std::fs::read(build(&toolchain, "scenario", mode)).unwrap();

            let info = section(&data, &[".go.buildinfo"]);
            assert_eq!(
                buildinfo::parse(&info).unwrap().go_version,
                toolchain.version
            );
            for len in 0..info.len() {
                let _ = buildinfo::parse(&info[..len]);
                cases += 1;
            }
            for _ in 0..2000 {
                let _ = buildinfo::parse(&rng.corrupt(&info, 64));
                cases += 1;
            }

            let table = section(&data, &[".gopclntab", ".data.rel.ro.gopclntab"]);
            let expected = read_pclntab(&table);
            assert!(
                expected > 500,
                "{}: {expected} runtime functions",
                toolchain.version
            );
            for len in (0..4096).chain((0..500).map(|_| rng.below(table.len()))) {
                let _ = read_pclntab(&table[..len.min(table.len())]);
                cases += 1;
            }
            for _ in 0..3000 {
                let _ = read_pclntab(&rng.corrupt(&table, 96));
                cases += 1;
            }
        }
    }
    eprintln!("parsers: {cases} truncated or corrupted sections parsed without a panic");
    assert!(cases > 100_000);
}

#[test]
fn whole_binaries_survive_truncation_and_corruption() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut cases = 0u64;
    for toolchain in toolchains() {
        let binary = build(&toolchain, "scenario", Mode::Stripped);
        let data = std::fs::read(&binary).unwrap();
        let parse = |bytes: &[u8]| GoBinary::parse(Path::new("/nonexistent"), bytes, "test");
        assert!(parse(&data).is_ok(), "{}", toolchain.version);
        for _ in 0..40 {
            let _ = parse(&data[..rng.below(data.len())]);
            let _ = parse(&rng.corrupt(&data, 4096));
            cases += 2;
        }
    }
    eprintln!("parsers: {cases} truncated or corrupted whole binaries parsed without a panic");
}

/// A text start near 2^64 in the `.gopclntab` header puts the functions past the
/// end of the address space: an error, not wrapped-around addresses (with
/// overflow checks, as the fuzz targets build, a panic).
#[test]
fn function_table_past_the_address_space() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let mut data = std::fs::read(build(&toolchain, "scenario", Mode::Stripped)).unwrap();
    let (offset, _) = object::File::parse(&*data)
        .unwrap()
        .section_by_name(".gopclntab")
        .and_then(|section| section.file_range())
        .unwrap();
    let field = (offset + Pclntab::text_start_field()) as usize;
    data[field..field + 8].copy_from_slice(&0xffff_ffff_ffff_0000u64.to_le_bytes());
    let error = format!(
        "{:#}",
        GoBinary::parse(Path::new("patched"), &data, "patched").unwrap_err()
    );
    assert!(
        error.contains(".gopclntab puts functions past the end of the address space"),
        "{error}"
    );
}

/// Bugs `cargo xtask fuzz` found, replayed from tests/fuzz-regressions/<target>/
/// (small inputs only: a finding on a window of a multi-MB base binary is kept as
/// the smallest file that takes the parser down the same path). Each must be an
/// error that says what is wrong.
#[test]
fn fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    // (file, what the error must say)
    let findings = [
        // A compressed DWARF section whose header claims 2.8 GB: the decompressor
        // reserved (and with zlib filled) that much before finding the data short.
        (
            "elf/compressed-dwarf-claims-2.8-GB",
            "cannot decompress .debug_info: its header claims 2835364904 bytes from",
        ),
    ];
    for (file, expected) in findings {
        let data = std::fs::read(dir.join(file)).unwrap();
        let error = format!(
            "{:#}",
            GoBinary::parse(Path::new(file), &data, file).expect_err(file)
        );
        assert!(error.contains(expected), "{file}: {error}");
    }

    // The input of the sched_globals target: the index of a Go version in the
    // layouts table, the code's link-time address, the code. Its RIP-relative
    // operands lie within 200 bytes of 2^64, where base + field overflowed (a
    // panic with overflow checks, wrapped-around matches without).
    let input = std::fs::read(dir.join("sched_globals/operand-near-2-pow-64")).unwrap();
    let (version, address, code) = (input[0], &input[1..9], &input[9..]);
    let versions: Vec<_> = layouts::table().versions.values().collect();
    let layout = versions[usize::from(version) % versions.len()];
    let reads =
        sched_globals::rip_relative_reads(code, u64::from_le_bytes(address.try_into().unwrap()));
    let found = sched_globals::find(
        &reads,
        &sched_globals::schedtrace_fields(&layout.struct_offsets),
    );
    assert_eq!(found, None);
}
