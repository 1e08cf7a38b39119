//! The packages `cargo xtask dist` builds (`cargo xtask test` builds them
//! first and names them): the .deb installed with dpkg and run from where it
//! put the binary; the tarball unpacked and run.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{Fixture, Mode, Observer, build, toolchains};

fn artifact(env: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{env} is not set: run the tests with `cargo xtask test`, which builds the packages")
    })
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Removes the package again, however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "gobpf-sched"])
            .output();
    }
}

#[test]
fn the_debian_package_installs_and_watches_a_go_program() {
    let deb = artifact("GOBPF_SCHED_DEB");
    run(Command::new("dpkg").arg("--install").arg(&deb));
    let _installed = Installed;
    let files = run(Command::new("dpkg").args(["--listfiles", "gobpf-sched"]));
    for file in [
        "/usr/bin/gobpf-sched",
        "/usr/share/man/man1/gobpf-sched.1.gz",
        "/usr/share/man/man1/gobpf-sched-attach.1.gz",
        "/usr/share/man/man1/gobpf-sched-run.1.gz",
        "/usr/share/bash-completion/completions/gobpf-sched",
        "/usr/share/zsh/vendor-completions/_gobpf-sched",
        "/usr/share/fish/vendor_completions.d/gobpf-sched.fish",
        "/usr/share/gobpf-sched/dashboards/gobpf-sched.json",
        "/usr/share/gobpf-sched/dashboards/prometheus.yml",
        "/usr/share/doc/gobpf-sched/LICENSE-MIT",
        "/usr/share/doc/gobpf-sched/LICENSE-APACHE",
        "/usr/share/doc/gobpf-sched/copyright",
    ] {
        assert!(
            files.lines().any(|l| l == file),
            "{file} not in the package:\n{files}"
        );
    }
    assert_eq!(
        run(Command::new("/usr/bin/gobpf-sched").arg("--version")),
        format!("gobpf-sched {}\n", env!("CARGO_PKG_VERSION"))
    );
    // The man page is the clap definition's: every option of attach.
    let page =
        run(Command::new("gzip").args(["-dc", "/usr/share/man/man1/gobpf-sched-attach.1.gz"]));
    assert!(page.contains(".TH gobpf-sched-attach 1"), "{page}");
    for option in [
        "overhead\\-budget",
        "sample\\-hz",
        "pprof",
        "block\\-profile",
    ] {
        assert!(
            page.contains(option),
            "no {option} in the man page:\n{page}"
        );
    }
    // bash loads the completion and completes the subcommands.
    let completion = run(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/gobpf-sched && \
         COMP_WORDS=(gobpf-sched \"\") COMP_CWORD=1 && _gobpf__sched gobpf-sched \"\" gobpf-sched && \
         printf '%s\\n' \"${COMPREPLY[@]}\"",
    ]));
    for subcommand in ["attach", "run", "inspect"] {
        assert!(completion.lines().any(|l| l == subcommand), "{completion}");
    }

    // An attach from the installed path, to a real Go program.
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "cpu", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["ratio", "1000"]);
    let observer = Observer::attach_using(
        Path::new("/usr/bin/gobpf-sched"),
        fixture.pid(),
        &["--json", "--interval", "10s"],
    );
    fixture.start();
    let (status, _) = fixture.finish();
    assert!(status.success());
    let finished = observer.wait();
    assert!(finished.status.success(), "{}", finished.stderr);
    let summary = finished.only("summary");
    assert!(
        summary["cpu"]["samples"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(summary["run_slices"].as_u64().unwrap_or(0) > 0, "{summary}");
}

#[test]
fn the_tarball_unpacks_and_runs() {
    let tarball = artifact("GOBPF_SCHED_TARBALL");
    let dir = tempfile::tempdir().expect("temp dir");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path()));
    let top = std::fs::read_dir(dir.path())
        .expect("unpacked")
        .next()
        .expect("one directory")
        .expect("entry")
        .path();
    for file in [
        "bin/gobpf-sched",
        "man/man1/gobpf-sched.1.gz",
        "completions/gobpf-sched.bash",
        "completions/_gobpf-sched",
        "completions/gobpf-sched.fish",
        "dashboards/gobpf-sched.json",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "README.md",
    ] {
        assert!(top.join(file).exists(), "{file} not in the tarball");
    }
    assert_eq!(
        run(Command::new(top.join("bin/gobpf-sched")).arg("--version")),
        format!("gobpf-sched {}\n", env!("CARGO_PKG_VERSION"))
    );
}
