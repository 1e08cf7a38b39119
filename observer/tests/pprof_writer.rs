//! The pprof writer (`outputs::pprof`), read back by the real `go tool pprof` of
//! each toolchain: stacks of real call sites of a real fixture binary, written as
//! a profile, then pprof's `-top`, `-traces`, `-tags`, `-tagfocus` and `-raw`
//! must show exactly the functions, values, labels and file:line written.

mod common;

use std::path::Path;

use gobpf_sched::{
    binary::{GoBinary, SourceFrame, SourceLines},
    outputs::pprof::{self, ProfileSample, ProfileSpec, UNKNOWN_FUNCTION},
};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use common::{Mode, Toolchain};

/// Return addresses of the direct calls from `caller` to `callee` (decoded).
fn call_sites(binary: &GoBinary, caller: &str, callee: &str) -> Vec<u64> {
    let functions = binary.functions_by_entry();
    let find = |name: &str| {
        let index = functions
            .iter()
            .position(|(_, n)| n == name)
            .unwrap_or_else(|| panic!("no function {name}"));
        (functions[index].0, functions[index + 1].0)
    };
    let (entry, end) = find(caller);
    let (target, _) = find(callee);
    let code = binary
        .code(entry, (end - entry) as usize)
        .expect("code of the caller");
    Decoder::with_ip(64, &code, entry, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.near_branch_target() == target)
        .map(|i| i.next_ip())
        .collect()
}

/// The return address of runtime.main's indirect call of main.main: the call on
/// the line after `fn := main_main` in the toolchain's runtime/proc.go.
fn main_main_call(toolchain: &Toolchain, binary: &GoBinary, lines: &SourceLines) -> u64 {
    let goroot = toolchain
        .go
        .parent()
        .and_then(Path::parent)
        .expect("GOROOT");
    let proc = std::fs::read_to_string(goroot.join("src/runtime/proc.go")).expect("proc.go");
    let line = proc
        .lines()
        .position(|l| l.trim_start().starts_with("fn := main_main"))
        .expect("fn := main_main") as i64
        + 2;
    let functions = binary.functions_by_entry();
    let index = functions
        .iter()
        .position(|(_, n)| n == "runtime.main")
        .expect("runtime.main");
    let (entry, end) = (functions[index].0, functions[index + 1].0);
    let code = binary.code(entry, (end - entry) as usize).expect("code");
    let calls: Vec<u64> = Decoder::with_ip(64, &code, entry, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| {
            i.mnemonic() == Mnemonic::Call
                && lines.frames_at(i.ip()).is_some_and(|f| {
                    f.len() == 1 && f[0].line == line && f[0].file.ends_with("runtime/proc.go")
                })
        })
        .map(|i| i.next_ip())
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "{}: calls of main.main {calls:x?}",
        toolchain.version
    );
    calls[0]
}

/// The goroutine function of tickersMode, and an address in it where `main.work`
/// is inlined.
fn inlined_work(binary: &GoBinary, lines: &SourceLines) -> (String, u64) {
    let functions = binary.functions_by_entry();
    for (index, (entry, name)) in functions.iter().enumerate() {
        if !name.starts_with("main.tickersMode.func") {
            continue;
        }
        let end = functions[index + 1].0;
        for pc in *entry..end {
            if lines
                .frames_at(pc)
                .is_some_and(|frames| frames[0].function == "main.work")
            {
                return (name.clone(), pc);
            }
        }
    }
    panic!("main.work is not inlined in a tickersMode goroutine");
}

/// The address of the `n`th instruction of `function`.
fn instruction(binary: &GoBinary, function: &str, n: usize) -> u64 {
    let entry = binary
        .functions_by_entry()
        .iter()
        .find(|(_, name)| name == function)
        .map(|(entry, _)| *entry)
        .unwrap_or_else(|| panic!("no function {function}"));
    let code = binary.code(entry, 256).expect("code");
    Decoder::with_ip(64, &code, entry, DecoderOptions::NONE)
        .into_iter()
        .nth(n)
        .expect("an instruction")
        .ip()
}

fn entry_of(binary: &GoBinary, function: &str) -> u64 {
    binary
        .functions_by_entry()
        .iter()
        .find(|(_, name)| name == function)
        .map(|(entry, _)| *entry)
        .unwrap_or_else(|| panic!("no function {function}"))
}

/// What `go tool addr2line` says of `pc`: the physical function and file:line.
fn addr2line(toolchain: &Toolchain, binary: &Path, pc: u64) -> (String, String) {
    let (function, file, line) = common::addr2line(toolchain, binary, &[pc]).remove(0);
    (function, format!("{file}:{line}"))
}

fn pprof(toolchain: &Toolchain, args: &[&str], binary: &Path, profile: &Path) -> String {
    common::go_tool_pprof(toolchain, args, binary, profile)
}

/// The rows of a `pprof -top` table: (flat, cum, name).
fn top_rows(output: &str) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> = output
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat  flat%"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (
                fields[0].to_owned(),
                fields[3].to_owned(),
                fields[5..].join(" "),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn rows(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut rows: Vec<_> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    rows.sort();
    rows
}

/// The trimmed, non-empty lines of `text` from the first that starts with `from`.
fn lines_from(text: &str, from: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with(from))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// For every toolchain, on the stripped build: three samples with stacks of real
/// addresses (main.work inlined in the tickersMode goroutine; tickersMode called
/// from main.main from runtime.main; a vDSO address), written with values,
/// string and numeric labels, read back by that toolchain's `go tool pprof`:
/// `-top` (both sample types), `-tagfocus`, `-tags`, `-traces` and `-raw` show
/// exactly the values, functions, labels, locations and mapping written, and
/// every location's file:line and physical function are `go tool addr2line`'s.
#[test]
fn go_tool_pprof_reads_the_profile() {
    for toolchain in common::toolchains() {
        let what = &toolchain.version;
        let path = common::build(&toolchain, "runtime", Mode::Stripped);
        let binary = GoBinary::open(&path, "fixture").expect("open");
        let lines = binary.source_lines().expect("source lines");
        let (worker, work_leaf) = inlined_work(&binary, &lines);
        // goexit's return address is its entry + 1 (`gostartcallfn` in
        // runtime/stack.go puts it there).
        let goexit = entry_of(&binary, "runtime.goexit") + 1;
        let mode_leaf = instruction(&binary, "main.tickersMode", 6);
        let mode_ret = call_sites(&binary, "main.main", "main.tickersMode")[0];
        let main_ret = main_main_call(&toolchain, &binary, &lines);
        let sleep_ret = call_sites(&binary, &worker, "time.Sleep")[0];
        let vdso = 0x7fff_f7fc_1234u64;
        let samples = vec![
            ProfileSample {
                stack: vec![work_leaf, goexit],
                values: vec![3, 30_000_000],
                labels: vec![("start_function".into(), worker.clone())],
                num_labels: vec![("goid".into(), 17, String::new())],
            },
            ProfileSample {
                stack: vec![mode_leaf, mode_ret, main_ret, goexit],
                values: vec![2, 20_000_000],
                labels: vec![("start_function".into(), "runtime.main".into())],
                num_labels: vec![("goid".into(), 1, String::new())],
            },
            ProfileSample {
                stack: vec![vdso, sleep_ret, goexit],
                values: vec![1, 10_000_000],
                labels: vec![("start_function".into(), worker.clone())],
                num_labels: vec![("goid".into(), 18, String::new())],
            },
        ];
        let spec = ProfileSpec {
            executable: None,
            sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
            period_type: ("cpu", "nanoseconds"),
            period: 10_000_000,
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 2_000_000_000,
            comments: vec!["gobpf-sched test".into()],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = dir.path().join("cpu.pb.gz");
        // Written twice: the second replaces the first, and leaves nothing beside.
        pprof::write(&profile, &spec, &samples[..1], &binary, &lines).expect("write");
        pprof::write(&profile, &spec, &samples, &binary, &lines).expect("write");
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files, ["cpu.pb.gz"], "{what}");
        let run = |args: &[&str]| pprof(&toolchain, args, &path, &profile);

        let top = run(&["-top", "-nodecount=50"]);
        assert_eq!(
            top_rows(&top),
            rows(&[
                ("30ms", "30ms", "main.work (inline)"),
                ("20ms", "20ms", "main.tickersMode"),
                ("10ms", "10ms", UNKNOWN_FUNCTION),
                ("0", "20ms", "main.main"),
                ("0", "40ms", &worker),
                ("0", "60ms", "runtime.goexit"),
                ("0", "20ms", "runtime.main"),
            ]),
            "{what}: {top}"
        );
        assert!(
            top.contains("Type: cpu") && top.contains("gobpf-sched test"),
            "{top}"
        );
        assert!(
            top.contains(&format!("Build ID: {}", binary.build_id)),
            "{top}"
        );
        let counts = run(&["-top", "-sample_index=samples"]);
        assert_eq!(
            top_rows(&counts),
            rows(&[
                ("3", "3", "main.work (inline)"),
                ("2", "2", "main.tickersMode"),
                ("1", "1", UNKNOWN_FUNCTION),
                ("0", "2", "main.main"),
                ("0", "4", &worker),
                ("0", "6", "runtime.goexit"),
                ("0", "2", "runtime.main"),
            ]),
            "{what}: {counts}"
        );
        let focus = format!("-tagfocus=start_function={worker}");
        let focused = run(&["-top", &focus]);
        assert_eq!(
            top_rows(&focused),
            rows(&[
                ("30ms", "30ms", "main.work (inline)"),
                ("10ms", "10ms", UNKNOWN_FUNCTION),
                ("0", "40ms", &worker),
                ("0", "40ms", "runtime.goexit"),
            ]),
            "{what}: {focused}"
        );

        let tags = run(&["-tags"]);
        // pprof releases differ in the form ("60.0ms" or "60ms of 60ms (100%)").
        let tag_lines: Vec<String> = lines_from(&tags, "goid:")
            .iter()
            .map(|l| {
                let l = l.replace(".0ms", "ms");
                l.split(" of ").next().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(
            tag_lines,
            [
                "goid: Total 60ms",
                "30ms (50.00%): 17",
                "20ms (33.33%): 1",
                "10ms (16.67%): 18",
                "start_function: Total 60ms",
                &format!("40ms (66.67%): {worker}"),
                "20ms (33.33%): runtime.main",
            ],
            "{what}: {tags}"
        );

        let traces = run(&["-traces"]);
        let separator = "-----------+-------------------------------------------------------";
        let expected_traces: Vec<String> = [
            separator,
            &format!("start_function:  {worker}"),
            "goid:  17",
            "30ms   main.work (inline)",
            &worker,
            "runtime.goexit",
            separator,
            "start_function:  runtime.main",
            "goid:  1",
            "20ms   main.tickersMode",
            "main.main",
            "runtime.main",
            "runtime.goexit",
            separator,
            &format!("start_function:  {worker}"),
            "goid:  18",
            &format!("10ms   {UNKNOWN_FUNCTION}"),
            &worker,
            "runtime.goexit",
            separator,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            lines_from(&traces, separator),
            expected_traces,
            "{what}: {traces}"
        );

        // -raw: the samples as written, each location's lines at its address, the mapping.
        let raw = run(&["-raw"]);
        let raw_lines: Vec<&str> = raw.lines().map(str::trim).collect();
        for expected in [
            "Comment: gobpf-sched test",
            "PeriodType: cpu nanoseconds",
            "Period: 10000000",
            "Duration: 2s",
            "samples/count cpu/nanoseconds",
            "3   30000000: 1 2",
            "2   20000000: 3 4 5 2",
            "1   10000000: 6 7 2",
            &format!("start_function:[{worker}]"),
            "start_function:[runtime.main]",
            "goid:[17]",
            "goid:[1]",
            "goid:[18]",
        ] {
            assert!(
                raw_lines.contains(&expected),
                "{what}: no {expected:?} in {raw}"
            );
        }
        // Newer pprof releases print a column after the line (0: not written).
        let column = if raw.contains(":0:0 s=") { ":0" } else { "" };
        let unknown = format!("6: {vdso:#x} {UNKNOWN_FUNCTION} :0{column} s=0");
        assert!(raw_lines.contains(&unknown.as_str()), "{what}: {raw}");
        // Location ids in order of first use; callers looked up at return address - 1.
        let located = [
            (1, work_leaf),
            (2, goexit - 1),
            (3, mode_leaf),
            (4, mode_ret - 1),
            (5, main_ret - 1),
            (7, sleep_ret - 1),
        ];
        for (id, pc) in located {
            let frames = lines.frames_at(pc).expect("frames");
            let (function, file_line) = addr2line(&toolchain, &path, pc);
            let text = |f: &SourceFrame| {
                format!(
                    "{} {}:{}{column} s={}",
                    f.function, f.file, f.line, f.start_line
                )
            };
            let innermost = &frames[0];
            assert_eq!(
                format!("{}:{}", innermost.file, innermost.line),
                file_line,
                "{what}: at {pc:#x}"
            );
            assert_eq!(
                frames.last().map(|f| &f.function),
                Some(&function),
                "{what}"
            );
            let first = format!("{id}: {pc:#x} M=1 {}", text(innermost));
            let at = raw_lines
                .iter()
                .position(|l| *l == first)
                .unwrap_or_else(|| panic!("{what}: no {first:?} in {raw}"));
            for (offset, frame) in frames.iter().enumerate().skip(1) {
                assert_eq!(raw_lines[at + offset], text(frame), "{what}: {raw}");
            }
        }
        // main.work is an inlined frame of location 1: two lines there.
        assert_eq!(
            lines.frames_at(work_leaf).map(|f| f.len()),
            Some(2),
            "{what}"
        );
        let (text_start, text_end) = binary.text_range().expect("text");
        let mapping = format!(
            "1: {text_start:#x}/{text_end:#x}/{:#x} {} {} [FN][FL][LN][IN]",
            binary.file_offset(text_start).expect("offset"),
            path.display(),
            binary.build_id
        );
        assert!(
            raw_lines.contains(&mapping.as_str()),
            "{what}: no {mapping:?} in {raw}"
        );
        eprintln!("{what}: go tool pprof reads the profile as written");
    }
}

/// Writing fails with a message that says what failed, and leaves nothing behind.
#[test]
fn write_errors_say_what_failed() {
    let toolchain = common::toolchains().pop().expect("a toolchain");
    let path = common::build(&toolchain, "runtime", Mode::Stripped);
    let binary = GoBinary::open(&path, "fixture").expect("open");
    let lines = binary.source_lines().expect("source lines");
    let spec = ProfileSpec {
        executable: None,
        sample_types: &[("samples", "count")],
        period_type: ("cpu", "nanoseconds"),
        period: 1,
        time_nanos: 0,
        duration_nanos: 0,
        comments: Vec::new(),
    };
    let sample = ProfileSample {
        stack: vec![entry_of(&binary, "runtime.main")],
        values: vec![1],
        ..Default::default()
    };
    let missing = Path::new("/nonexistent-dir/cpu.pb.gz");
    let error = pprof::write(
        missing,
        &spec,
        std::slice::from_ref(&sample),
        &binary,
        &lines,
    )
    .expect_err("no directory");
    assert!(
        format!("{error:#}").starts_with("cannot create the profile /nonexistent-dir/cpu.pb.gz"),
        "{error:#}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let two_values = ProfileSample {
        values: vec![1, 2],
        ..sample
    };
    let error = pprof::write(
        &dir.path().join("p.pb.gz"),
        &spec,
        &[two_values],
        &binary,
        &lines,
    )
    .expect_err("two values for one type");
    assert_eq!(
        format!("{error:#}"),
        "pprof sample 0 has 2 values for 1 sample types"
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
