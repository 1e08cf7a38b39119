//! `gobpf-sched inspect` on every supported Go version in every build mode,
//! checked against what the Go toolchain itself says (`go version -m`,
//! `go tool nm`). No root needed.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Mode, TempBinary, Toolchain, assert_fails, build, observer_binary, toolchains};
use serde_json::Value;

fn inspect(binary: &Path) -> Value {
    let output = Command::new(observer_binary())
        .args(["inspect", "--json"])
        .arg(binary)
        .output()
        .expect("run gobpf-sched inspect");
    assert!(
        output.status.success(),
        "inspect {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspect --json prints JSON")
}

fn go(toolchain: &Toolchain, args: &[&str], binary: &Path) -> String {
    let output = Command::new(&toolchain.go)
        .args(args)
        .arg(binary)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go");
    assert!(
        output.status.success(),
        "go {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `go version -m`: the version, the `path` line and the `build` settings.
fn version_m(toolchain: &Toolchain, binary: &Path) -> (String, String, BTreeMap<String, String>) {
    let text = go(toolchain, &["version", "-m"], binary);
    let version = text
        .lines()
        .next()
        .unwrap()
        .rsplit(": ")
        .next()
        .unwrap()
        .to_owned();
    let mut path = String::new();
    let mut settings = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.trim_start().splitn(2, '\t').collect();
        match fields.as_slice() {
            ["path", value] => path = (*value).to_owned(),
            ["build", setting] => {
                let (key, value) = setting.split_once('=').unwrap();
                settings.insert(key.to_owned(), value.to_owned());
            }
            _ => {}
        }
    }
    (version, path, settings)
}

/// `go tool nm` addresses of the given functions.
fn nm(toolchain: &Toolchain, binary: &Path) -> BTreeMap<String, u64> {
    go(toolchain, &["tool", "nm"], binary)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                // External linking (cgo) makes them local symbols: `t`.
                [address, "T" | "t", name] if name.starts_with("runtime.") => {
                    Some(((*name).to_owned(), u64::from_str_radix(address, 16).ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

fn check_mode(mode: Mode) {
    for toolchain in toolchains() {
        let binary = build(&toolchain, "scenario", mode);
        let report = inspect(&binary);
        let v = format!("{} {mode:?}", toolchain.version);

        let (version, path, settings) = version_m(&toolchain, &binary);
        assert_eq!(report["go_version"], version.as_str(), "{v}");
        assert_eq!(report["package_path"], path.as_str(), "{v}");
        let reported: BTreeMap<String, String> =
            serde_json::from_value(report["build_settings"].clone()).unwrap();
        assert_eq!(
            reported, settings,
            "{v}: build settings differ from go version -m"
        );

        assert_eq!(report["pie"], mode == Mode::Pie, "{v}");
        // A Go PIE has an ELF interpreter too, cgo or not: the loader relocates it.
        assert_eq!(
            report["dynamically_linked"],
            matches!(mode, Mode::Cgo | Mode::Pie),
            "{v}"
        );
        assert_eq!(report["cgo_enabled"], mode == Mode::Cgo, "{v}");
        assert_eq!(report["stripped"], mode == Mode::Stripped, "{v}");
        assert_eq!(report["dwarf"], mode != Mode::Stripped, "{v}");
        assert_eq!(report["supported"], true);
        let stripped = mode == Mode::Stripped;
        assert_eq!(
            report["symbols_from"],
            if stripped { "pclntab" } else { "symtab" },
            "{v}"
        );
        let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
        if stripped {
            assert_eq!(report["layout_from"]["source"], "table", "{v}");
            assert_eq!(
                report["layout_from"]["version"],
                minor.trim_start_matches("go"),
                "{v}"
            );
        } else {
            assert_eq!(report["layout_from"]["source"], "dwarf", "{v}");
        }

        // Function addresses: .symtab and .gopclntab agree with each other and with
        // `go tool nm`; a stripped build has the code of the default build at the
        // same addresses, so nm of that build is its ground truth.
        let truth = if stripped {
            nm(&toolchain, &build(&toolchain, "scenario", Mode::Default))
        } else {
            nm(&toolchain, &binary)
        };
        let probes = report["probes"].as_array().unwrap();
        assert_eq!(probes.len(), toolchain.expected_uprobes(), "{v}");
        for probe in probes {
            let function = probe["function"].as_str().unwrap();
            let expected = truth[function];
            assert_eq!(probe["address"], expected, "{v} {function}");
            assert_eq!(
                probe["pclntab_address"], expected,
                "{v} {function} from .gopclntab"
            );
            if !stripped {
                assert_eq!(
                    probe["symtab_address"], expected,
                    "{v} {function} from .symtab"
                );
            }
            let expected_site = match function {
                "runtime.schedule"
                | "runtime.gopreempt_m"
                | "runtime.goschedImpl"
                | "runtime.goyield_m" => "StackCheckJump",
                _ => "Entry", // casgstatus, preemptPark, ... are nosplit
            };
            assert_eq!(probe["placement"], expected_site, "{v} {function}");
        }
        // runtime.sched and runtime.allp: from .symtab, and found again in the
        // code of runtime.schedtrace at the same addresses; stripped, from the
        // code; runtime.allgs likewise, from the code of runtime.forEachG.
        let globals = &report["scheduler_globals"];
        let in_code = &report["scheduler_globals_in_code"];
        assert!(
            globals["sched"].as_u64().is_some_and(|a| a > 0),
            "{v}: {globals}"
        );
        assert_eq!(globals["sched"], in_code["sched"], "{v}");
        assert_eq!(globals["allp"], in_code["allp"], "{v}");
        assert!(
            globals["allgs"].as_u64().is_some_and(|a| a > 0),
            "{v}: {globals}"
        );
        assert_eq!(globals["allgs"], in_code["allgs"], "{v}");
        let expected_source = if stripped { "schedtrace" } else { "symtab" };
        assert_eq!(globals["found_in"], expected_source, "{v}");
        let reasons: Vec<String> = serde_json::from_value(report["wait_reasons"].clone()).unwrap();
        for name in ["chan receive", "chan send", "sleep", "select"] {
            assert!(
                reasons.iter().any(|r| r == name),
                "{v}: no wait reason {name:?}"
            );
        }
    }
}

#[test]
fn default_builds() {
    check_mode(Mode::Default);
}

#[test]
fn stripped_builds() {
    check_mode(Mode::Stripped);
}

#[test]
fn pie_builds() {
    check_mode(Mode::Pie);
}

#[test]
fn cgo_builds() {
    check_mode(Mode::Cgo);
}

/// The committed table says for each version what that version's DWARF says.
#[test]
fn the_offsets_table_agrees_with_dwarf() {
    for toolchain in toolchains() {
        let from_dwarf = inspect(&build(&toolchain, "scenario", Mode::Default));
        let from_table = inspect(&build(&toolchain, "scenario", Mode::Stripped));
        assert_eq!(from_table["layout_from"]["source"], "table");
        assert_eq!(
            from_dwarf["struct_offsets"], from_table["struct_offsets"],
            "{}: DWARF and table differ",
            toolchain.version
        );
        assert_eq!(
            from_dwarf["wait_reasons"], from_table["wait_reasons"],
            "{}",
            toolchain.version
        );
    }
}

#[test]
fn inspecting_a_file_needs_no_root() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Stripped);
    // A copy that user nobody can read (the build cache may be under /root).
    let copy = std::env::temp_dir().join(format!("gobpf-sched-inspect-{}", std::process::id()));
    std::fs::copy(&binary, &copy).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(observer_binary())
        .args(["inspect", "--json"])
        .arg(&copy)
        .output()
        .expect("run inspect as nobody");
    let _ = std::fs::remove_file(&copy);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["go_version"], toolchain.version.as_str());
}

/// Only a regular file is read: a device, a FIFO or a directory is refused before
/// reading (`/dev/zero` would never end; opening a FIFO would wait for a writer).
#[test]
fn inputs_that_are_not_regular_files() {
    let started = Instant::now();
    // `timeout`: a regression must fail this test, not fill the machine's memory.
    assert_fails(
        &["timeout", "20"],
        &["inspect", "/dev/zero"],
        "/dev/zero is not a regular file",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let fifo = std::env::temp_dir().join(format!("gobpf-sched-fifo-{}", std::process::id()));
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let fifo_arg = fifo.to_string_lossy().into_owned();
    assert_fails(
        &["timeout", "20"],
        &["inspect", &fifo_arg],
        &format!("{fifo_arg} is not a regular file"),
    );
    let _ = std::fs::remove_file(&fifo);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    assert_fails(
        &[],
        &["inspect", &dir.to_string_lossy()],
        &format!("{} is not a regular file", dir.display()),
    );
}

/// A copy cut short says so, whatever the build mode (the section headers are
/// near the start of a Go-linked file, at the end of an externally linked one).
#[test]
fn truncated_binaries_say_so() {
    let toolchain = toolchains().pop().expect("a toolchain");
    for mode in Mode::ALL {
        let data = std::fs::read(build(&toolchain, "scenario", mode)).unwrap();
        for len in [100_000, data.len() / 2, data.len() - 1] {
            let cut = TempBinary::write(&data[..len]);
            assert_fails(
                &[],
                &["inspect", &cut.0.to_string_lossy()],
                &format!(
                    "{} is truncated: the file ends before the sections and segments its \
                     ELF headers describe ({len} bytes; the ELF headers describe ",
                    cut.0.display()
                ),
            );
        }
    }
}

/// A file larger than any executable is refused before it is read (a sparse
/// file: it takes no disk space).
#[test]
fn huge_files_are_refused_unread() {
    let huge = TempBinary::write(b"");
    std::fs::File::options()
        .write(true)
        .open(&huge.0)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    let started = Instant::now();
    assert_fails(
        &[],
        &["inspect", &huge.0.to_string_lossy()],
        &format!(
            "{} is 5368709120 bytes, more than the 4 GiB an executable may have here",
            huge.0.display()
        ),
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}
