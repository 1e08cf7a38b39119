//! Bad input gets one clear line on stderr and a non-zero exit.

mod common;

use common::{Fixture, build, run_observer, toolchains};

fn assert_fails(wrapper: &[&str], args: &[&str], expected: &str) {
    let (status, stderr) = run_observer(wrapper, args);
    assert!(!status.success(), "{args:?} succeeded");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn missing_pid() {
    // Above the kernel's largest pid_max (2^22), so it can never exist.
    assert_fails(
        &[],
        &["attach", "--pid", "4194305"],
        "no process with pid 4194305",
    );
}

#[test]
fn kernel_thread() {
    assert_fails(
        &[],
        &["attach", "--pid", "2"],
        "has no executable (a kernel thread?)",
    );
}

#[test]
fn not_a_go_program() {
    let mut sleep = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleep.id().to_string();
    assert_fails(&[], &["attach", "--pid", &pid], "is not a Go program");
    sleep.kill().unwrap();
    sleep.wait().unwrap();
}

#[test]
fn stripped_and_dwarfless_binaries_are_refused_by_name() {
    for toolchain in toolchains() {
        for (flags, expected) in [
            ("-s -w", "is stripped: it has no symbol table (.symtab)"),
            ("-w", "has no DWARF debug info"),
        ] {
            let binary = build(&toolchain, "scenario.go", &["-ldflags", flags]);
            let fixture = Fixture::spawn(&binary, &[]);
            let pid = fixture.pid().to_string();
            assert_fails(&[], &["attach", "--pid", &pid], expected);
            assert_fails(&[], &["attach", "--pid", &pid], &toolchain.version);
        }
    }
}

#[test]
fn unprivileged_callers_are_told_what_is_missing() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario.go", &[]);
    let fixture = Fixture::spawn(&binary, &[]);
    let pid = fixture.pid().to_string();
    let args = ["attach", "--pid", pid.as_str()];
    assert_fails(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &args,
        "must run as root",
    );
    assert_fails(
        &["unshare", "--user", "--map-root-user"],
        &args,
        "runs inside a user namespace",
    );
    assert_fails(
        &["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin"],
        &args,
        "lacks the capabilities CAP_BPF and CAP_PERFMON",
    );
}

#[test]
fn bad_arguments() {
    let (status, stderr) = run_observer(&[], &["attach", "--pid", "1", "--interval", "soon"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--interval"), "{stderr}");
}
