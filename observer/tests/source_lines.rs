//! Source lines from `.gopclntab` (`SourceLines`), checked against the Go
//! toolchain's own `go tool addr2line` on real fixture binaries of every toolchain,
//! and between the default and the stripped build of each.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use gobpf_sched::binary::{GoBinary, SourceFrame, SourceLines};

use common::{Mode, Toolchain};

/// Addresses to look up: entries of, and every 7th byte inside, every `main.*`
/// function and a spread of `runtime.*` ones (many with inlined calls).
fn sample_addresses(binary: &GoBinary) -> Vec<u64> {
    let functions = binary.functions_by_entry();
    let (_, text_end) = binary.text_range().expect("text range");
    let runtime: Vec<usize> = (0..functions.len())
        .filter(|&i| functions[i].1.starts_with("runtime."))
        .collect();
    let mut chosen: Vec<usize> = (0..functions.len())
        .filter(|&i| functions[i].1.starts_with("main."))
        .collect();
    // Every 25th runtime function, and some with well-known inlined calls.
    chosen.extend(runtime.iter().step_by(25));
    for name in [
        "runtime.main",
        "runtime.goexit",
        "runtime.schedule",
        "runtime.findRunnable",
        "runtime.mallocgc",
        "runtime.newproc1",
        "runtime.casgstatus",
    ] {
        chosen.extend((0..functions.len()).filter(|&i| functions[i].1 == name));
    }
    chosen.sort_unstable();
    chosen.dedup();
    let mut addresses = Vec::new();
    for index in chosen {
        let entry = functions[index].0;
        let end = functions.get(index + 1).map_or(text_end, |f| f.0);
        addresses.extend((entry..end).step_by(7).take(40));
    }
    addresses
}

fn lines_of(toolchain: &Toolchain, mode: Mode) -> (std::path::PathBuf, GoBinary, SourceLines) {
    let path = common::build(toolchain, "runtime", mode);
    let binary = GoBinary::open(&path, "fixture").expect("open fixture");
    let lines = binary.source_lines().expect("source lines");
    (path, binary, lines)
}

/// For every toolchain: the frames of a few hundred addresses equal what
/// `go tool addr2line` prints (it names the physical function, and the file:line
/// of the address itself, which is the innermost inlined frame's), the default and
/// the stripped build agree frame for frame, inlined frames are found (with the
/// `func` lines from Go 1.20), and addresses past Go's code have no frames.
#[test]
fn frames_match_addr2line_for_every_toolchain() {
    for toolchain in common::toolchains() {
        let (path, binary, lines) = lines_of(&toolchain, Mode::Default);
        let (_, stripped_binary, stripped) = lines_of(&toolchain, Mode::Stripped);
        let what = &toolchain.version;
        assert!(lines.has_inline_frames(), "{what}: no inline trees");
        assert!(
            stripped.has_inline_frames(),
            "{what} stripped: no inline trees"
        );
        assert_eq!(binary.text_range(), stripped_binary.text_range(), "{what}");

        let addresses = sample_addresses(&binary);
        assert!(
            addresses.len() > 300,
            "{what}: only {} addresses",
            addresses.len()
        );
        let expected = common::addr2line(&toolchain, &path, &addresses);
        let (mut inlined, mut uncovered) = (0, 0);
        for (&address, (function, file, line)) in addresses.iter().zip(&expected) {
            let frames = lines
                .frames_at(address)
                .unwrap_or_else(|| panic!("{what}: no frames at {address:#x} ({function})"));
            assert_eq!(
                stripped.frames_at(address).as_ref(),
                Some(&frames),
                "{what}: the stripped build differs at {address:#x}"
            );
            let innermost = &frames[0];
            let outermost = frames.last().expect("at least one frame");
            // Past a function's last instruction (alignment padding) its tables end:
            // addr2line (debug/gosym) says "" and -1 there, the runtime and
            // SourceLines "?" and 0.
            let (file, line) = if (file.as_str(), *line) == ("", -1) {
                uncovered += 1;
                ("?", 0)
            } else {
                (file.as_str(), *line)
            };
            assert_eq!(
                (
                    outermost.function.as_str(),
                    innermost.file.as_str(),
                    innermost.line
                ),
                (function.as_str(), file, line),
                "{what}: at {address:#x}: {frames:?}"
            );
            if frames.len() > 1 {
                inlined += 1;
                check_inline_chain(&binary, &frames, what, address);
            }
            if toolchain.minor() >= (1, 20) {
                assert!(
                    frames.iter().all(|f| f.line == 0 || f.start_line > 0),
                    "{what}: at {address:#x}: start lines {frames:?}"
                );
            } else {
                assert!(frames.iter().all(|f| f.start_line == 0), "{what}");
            }
        }
        assert!(
            inlined > 10,
            "{what}: only {inlined} addresses with inlined frames"
        );
        assert!(
            uncovered * 10 < addresses.len(),
            "{what}: {uncovered} in padding"
        );
        let (_, text_end) = binary.text_range().expect("text range");
        assert_eq!(lines.frames_at(text_end), None, "{what}");
        assert_eq!(lines.frames_at(0), None, "{what}");
        assert_eq!(lines.frames_at(u64::MAX), None, "{what}");
        eprintln!(
            "{what}: {} addresses match addr2line, {inlined} with inlined frames, \
             {uncovered} in padding",
            addresses.len()
        );
    }
}

/// An inlined frame is a real function of the binary's source: its name is a
/// function name (a package path, a dot), each frame has a file (a `.go` file, or
/// `<autogenerated>` for wrappers) and a line, and the outermost is the function
/// the address is in.
fn check_inline_chain(binary: &GoBinary, frames: &[SourceFrame], what: &str, address: u64) {
    let physical = binary.function_at(address).expect("a function");
    assert_eq!(frames.last().map(|f| f.function.as_str()), Some(physical));
    for frame in frames {
        assert!(
            frame.function.contains('.')
                && (frame.file.ends_with(".go") || frame.file == "<autogenerated>")
                && frame.line > 0,
            "{what}: at {address:#x}: {frames:?}"
        );
    }
}

/// `llvm-symbolizer` on PATH, else that of an installed LLVM (bpf-linker's build
/// needs one: `cargo xtask setup`).
fn llvm_symbolizer_path() -> std::path::PathBuf {
    let on_path = Command::new("llvm-symbolizer")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return "llvm-symbolizer".into();
    }
    let mut installed: Vec<_> = std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(|e| Some(e.ok()?.path().join("bin/llvm-symbolizer")))
        .filter(|p| p.to_string_lossy().contains("/llvm-") && p.exists())
        .collect();
    installed.sort();
    installed
        .pop()
        .expect("no llvm-symbolizer: install LLVM (apt-get install llvm)")
}

/// What `llvm-symbolizer --inlining` reads from the DWARF of `binary`: for each
/// address, its frames (function, file, line), innermost first.
fn llvm_symbolizer(binary: &std::path::Path, addresses: &[u64]) -> Vec<Vec<(String, String, i64)>> {
    let input: String = addresses.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut child = Command::new(llvm_symbolizer_path())
        .args(["--inlining", "--functions=linkage", "--obj"])
        .arg(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("llvm-symbolizer");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("llvm-symbolizer output");
    writer.join().expect("writer").expect("write addresses");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .collect::<Vec<_>>()
                .chunks(2)
                .map(|pair| {
                    let mut position = pair[1].rsplitn(3, ':');
                    let _column = position.next();
                    let line = position.next().and_then(|l| l.parse().ok()).unwrap_or(-1);
                    let file = position.next().unwrap_or("").to_owned();
                    // DWARF names assembly functions by their ABI0 symbol.
                    let function = pair[0].trim_end_matches(".abi0").to_owned();
                    (function, file, line)
                })
                .collect()
        })
        .collect()
}

/// For every toolchain, on the default build: every frame (function, file, line)
/// of every address, inlined ones included, equals what `llvm-symbolizer
/// --inlining` reads from the DWARF the compiler wrote from the same positions.
/// Only Go 1.19's DWARF leaves out what was inlined into autogenerated wrappers:
/// there it must agree on the physical function and the innermost file:line.
#[test]
fn inline_frames_match_dwarf() {
    for toolchain in common::toolchains() {
        let (path, binary, lines) = lines_of(&toolchain, Mode::Default);
        let what = &toolchain.version;
        let addresses = sample_addresses(&binary);
        let expected = llvm_symbolizer(&path, &addresses);
        assert_eq!(expected.len(), addresses.len(), "{what}");
        let (mut compared, mut inlined) = (0, 0);
        for (&address, dwarf) in addresses.iter().zip(&expected) {
            // Padding between functions: no line table in either.
            if dwarf[0].0 == "??" {
                continue;
            }
            let frames = lines.frames_at(address).expect("frames");
            // llvm-symbolizer shows the file of wrappers relative to the unit's
            // directory ("./<autogenerated>", "././<autogenerated>"), or not at all.
            let ours: Vec<(String, String, i64)> = frames
                .iter()
                .zip(dwarf.iter().chain(std::iter::repeat(&dwarf[0])))
                .map(|(f, (_, dwarf_file, dwarf_line))| {
                    if f.file == "<autogenerated>"
                        && (dwarf_file.ends_with("/<autogenerated>") || dwarf_file == "??")
                    {
                        (f.function.clone(), dwarf_file.clone(), *dwarf_line)
                    } else {
                        (f.function.clone(), f.file.clone(), f.line)
                    }
                })
                .collect();
            compared += 1;
            if ours.len() > 1 {
                inlined += 1;
            }
            let outermost = frames.last().expect("a frame");
            if toolchain.minor() == (1, 19)
                && ours.len() > 1
                && dwarf.len() == 1
                && outermost.file == "<autogenerated>"
            {
                assert_eq!(
                    (&outermost.function, &ours[0].1, ours[0].2),
                    (&dwarf[0].0, &dwarf[0].1, dwarf[0].2),
                    "{what}: at {address:#x}"
                );
                continue;
            }
            assert_eq!(&ours, dwarf, "{what}: at {address:#x}");
        }
        assert!(
            compared > 300 && inlined > 10,
            "{what}: {compared} compared, {inlined} inlined"
        );
        eprintln!("{what}: {compared} addresses match the DWARF, {inlined} with inlined frames");
    }
}
