//! Bad input gets one clear line on stderr and a non-zero exit.

mod common;

use common::{Fixture, Mode, assert_fails, build, claiming_version, run_observer, toolchains};

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
fn go_versions_outside_the_supported_range_are_refused() {
    let toolchain = toolchains()
        .into_iter()
        .find(|t| t.version.len() == "go1.25.5".len())
        .expect("a goX.YY.Z toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let future = claiming_version(&binary, "go1.99.0");
    let fixture = Fixture::spawn(&future.0, &[]);
    let pid = fixture.pid().to_string();
    assert_fails(
        &[],
        &["attach", "--pid", &pid, "--duration", "5s"],
        "is built with go1.99.0, outside the supported range go1.19 to go1.27",
    );
    assert_fails(
        &[],
        &["inspect", &future.0.to_string_lossy()],
        "outside the supported range",
    );
    // Go 1.20 is supported from DWARF, but a stripped 1.20 binary has no table entry
    // (no Go 1.20 toolchain exists here to generate one).
    let stripped = build(&toolchain, "scenario", Mode::Stripped);
    let go120 = claiming_version(&stripped, "go1.20.9");
    assert_fails(
        &[],
        &["inspect", &go120.0.to_string_lossy()],
        "go1.20.9 is not in the offsets table",
    );
}

#[test]
fn unprivileged_callers_are_told_what_is_missing() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
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
    for (args, expected) in [
        (&["--interval", "soon"][..], "--interval"),
        (
            &["--only", "everything"][..],
            "possible values: schedule, goroutines",
        ),
        (&["--prometheus", "port-9464"][..], "invalid socket address"),
        (
            &["--json", "--plain"][..],
            "'--json' cannot be used with '--plain'",
        ),
        (
            &["--sample-hz", "5000"][..],
            "is above 1000 samples a second",
        ),
    ] {
        let mut all = vec!["attach", "--pid", "1"];
        all.extend(args);
        let (status, stderr) = run_observer(&[], &all);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Outputs that cannot be set up end the session at once, saying why.
#[test]
fn outputs_that_cannot_be_set_up() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let fixture = Fixture::spawn(&binary, &[]);
    let pid = fixture.pid().to_string();
    assert_fails(
        &[],
        &[
            "attach",
            "--pid",
            &pid,
            "--record",
            "/nonexistent/dir/t.pftrace",
        ],
        "cannot create the recording /nonexistent/dir/t.pftrace",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    assert_fails(
        &[],
        &["attach", "--pid", &pid, "--prometheus", &address],
        &format!("cannot listen on {address} for --prometheus: Address already in use"),
    );
    // The profiles are written at the end: a path that cannot be is refused first.
    for flag in ["--pprof", "--block-profile"] {
        assert_fails(
            &[],
            &["attach", "--pid", &pid, flag, "/nonexistent/dir/p.pb.gz"],
            &format!(
                "cannot write {flag} /nonexistent/dir/p.pb.gz: /nonexistent/dir is not a directory"
            ),
        );
    }
    assert_fails(
        &[],
        &[
            "attach",
            "--pid",
            &pid,
            "--pprof",
            "p.pb.gz",
            "--sample-hz",
            "0",
        ],
        "--pprof writes the CPU samples: it needs --sample-hz above 0",
    );
    assert_fails(
        &[],
        &[
            "attach",
            "--pid",
            &pid,
            "--block-profile",
            "b.pb.gz",
            "--only",
            "preemptions",
        ],
        "--block-profile needs the goroutines facet",
    );
    drop(fixture);
}

/// `attach` needs a process; `run` starts its own.
#[test]
fn attach_and_run_are_told_what_they_need() {
    assert_fails(&[], &["attach"], "attach needs --pid PID");
    assert_fails(
        &[],
        &["run", "--pid", "1", "--", "true"],
        "run starts its own process: leave --pid out",
    );
    let (status, stderr) = run_observer(&[], &["run"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("COMMAND"), "{stderr}");
}
