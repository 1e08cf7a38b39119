//! `cargo xtask dist`: what a user installs. A Debian package (built with
//! `dpkg-deb`, which every Debian has) and a release tarball, both holding
//! the binary, its man pages and shell completions (generated from its own
//! clap definition by `gobpf-sched manpages` and `gobpf-sched completions`),
//! the Grafana dashboard and Prometheus configuration, the README and both
//! licence texts (the workspace is "MIT OR Apache-2.0").

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{shell, toolchains::workspace_root};

const NAME: &str = "gobpf-sched";

/// What `dist` made.
pub struct Artifacts {
    pub deb: PathBuf,
    pub tarball: PathBuf,
}

/// Packages target/release/gobpf-sched (built before) into target/dist.
pub fn run() -> Result<Artifacts> {
    let root = workspace_root();
    let binary = root.join("target/release").join(NAME);
    if !binary.exists() {
        bail!("{} is not built (cargo xtask build)", binary.display());
    }
    let version = version(&binary)?;
    let dist = root.join("target/dist");
    let staging = dist.join(format!("{NAME}_{version}_amd64"));
    let _ = std::fs::remove_dir_all(&staging);
    let usr = staging.join("usr");
    install(&binary, &usr.join("bin").join(NAME), 0o755)?;
    let man = usr.join("share/man/man1");
    generated_man_pages(&binary, &man)?;
    completions(&binary, &usr.join("share"))?;
    let share = usr.join("share").join(NAME);
    for file in ["gobpf-sched.json", "prometheus.yml", "README.md"] {
        install(
            &root.join("dashboards").join(file),
            &share.join("dashboards").join(file),
            0o644,
        )?;
    }
    let doc = usr.join("share/doc").join(NAME);
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        install(&root.join("observer").join(file), &doc.join(file), 0o644)?;
    }
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    write(&doc.join("copyright"), &copyright(), 0o644)?;
    let installed_kb = disk_usage_kb(&staging)?;
    write(
        &staging.join("DEBIAN/control"),
        &control(&version, &libc_dependency(&binary), installed_kb),
        0o644,
    )?;
    let deb = dist.join(format!("{NAME}_{version}_amd64.deb"));
    shell::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&staging)
            .arg(&deb),
    )
    .context("dpkg-deb (Debian package dpkg) could not build the package")?;
    let tarball = tarball(&staging, &dist, &version)?;
    eprintln!("xtask: built {} and {}", deb.display(), tarball.display());
    Ok(Artifacts { deb, tarball })
}

/// `gobpf-sched --version` says `gobpf-sched X.Y.Z`.
fn version(binary: &Path) -> Result<String> {
    let out = shell::output(Command::new(binary).arg("--version"))
        .with_context(|| format!("{} --version failed", binary.display()))?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no version in {out:?}"))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().context("a file in a directory")?)?;
    std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().context("a file in a directory")?)?;
    std::fs::write(to, text)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The man pages, gzipped as Debian policy wants them (`-n`: no time stamp,
/// the same bytes every build).
fn generated_man_pages(binary: &Path, man: &Path) -> Result<()> {
    std::fs::create_dir_all(man)?;
    shell::run(Command::new(binary).arg("manpages").arg(man))?;
    for entry in std::fs::read_dir(man)? {
        shell::run(Command::new("gzip").args(["-9nf"]).arg(entry?.path()))?;
    }
    Ok(())
}

/// bash, zsh and fish completions where those shells look for them.
fn completions(binary: &Path, share: &Path) -> Result<()> {
    for (shell_name, path) in [
        ("bash", "bash-completion/completions/gobpf-sched"),
        ("zsh", "zsh/vendor-completions/_gobpf-sched"),
        ("fish", "fish/vendor_completions.d/gobpf-sched.fish"),
    ] {
        let script = shell::output(Command::new(binary).args(["completions", shell_name]))
            .with_context(|| format!("gobpf-sched completions {shell_name} failed"))?;
        write(&share.join(path), &script, 0o644)?;
    }
    Ok(())
}

/// The newest glibc symbol version the binary needs (`objdump -T`), as a
/// package dependency; plain `libc6` when it cannot be told.
fn libc_dependency(binary: &Path) -> String {
    let newest = shell::output(Command::new("objdump").arg("-T").arg(binary))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|word| {
            word.trim_matches(|c| c == '(' || c == ')')
                .strip_prefix("GLIBC_")
        })
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max();
    match newest {
        Some((major, minor)) => format!("libc6 (>= {major}.{minor})"),
        None => "libc6".to_owned(),
    }
}

fn disk_usage_kb(dir: &Path) -> Result<u64> {
    let out = shell::output(Command::new("du").args(["-sk"]).arg(dir)).context("du failed")?;
    out.split_whitespace()
        .next()
        .and_then(|kb| kb.parse().ok())
        .context("du printed no size")
}

fn control(version: &str, depends: &str, installed_kb: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: The gobpf-sched authors <gobpf-sched@users.noreply.github.com>\n\
         Installed-Size: {installed_kb}\n\
         Depends: {depends}\n\
         Section: devel\n\
         Priority: optional\n\
         Description: watch the Go runtime scheduler of a running process with eBPF\n \
         gobpf-sched attaches to an unmodified, already running Go program (no\n \
         restart, no GODEBUG, no code change) and shows what its scheduler does:\n \
         run-queue latency, parks by reason, syscalls, SIGURG preemptions, per-P\n \
         run queues, CPU samples by goroutine and who held the Ps while others\n \
         waited; text, JSON, a live screen, Prometheus, Perfetto and pprof files.\n \
         Needs root (CAP_BPF, CAP_PERFMON), a kernel with BTF and uprobes.\n"
    )
}

/// Debian's machine-readable copyright file.
fn copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: {NAME}\n\
         \n\
         Files: *\n\
         Copyright: 2026 The gobpf-sched authors\n\
         License: MIT or Apache-2.0\n \
         The full texts are in /usr/share/doc/{NAME}/LICENSE-MIT and\n \
         /usr/share/doc/{NAME}/LICENSE-APACHE (on Debian also\n \
         /usr/share/common-licenses/Apache-2.0).\n\
         \n\
         Files: observer/proto/profile.proto\n\
         Copyright: 2016 Google Inc.\n\
         License: Apache-2.0\n \
         pprof's profile format (github.com/google/pprof), compiled into the binary.\n"
    )
}

/// gobpf-sched-VERSION-x86_64-linux.tar.gz: the same files, laid out for
/// unpacking anywhere (bin/, man/, completions/, dashboards/, the licences).
fn tarball(staging: &Path, dist: &Path, version: &str) -> Result<PathBuf> {
    let top = format!("{NAME}-{version}-x86_64-linux");
    let dir = dist.join(&top);
    let _ = std::fs::remove_dir_all(&dir);
    let usr = staging.join("usr");
    let share = usr.join("share");
    let copies = [
        (usr.join("bin").join(NAME), format!("bin/{NAME}")),
        (share.join("man/man1"), "man/man1".to_owned()),
        (
            share.join("bash-completion/completions").join(NAME),
            format!("completions/{NAME}.bash"),
        ),
        (
            share
                .join("zsh/vendor-completions")
                .join(format!("_{NAME}")),
            format!("completions/_{NAME}"),
        ),
        (
            share
                .join("fish/vendor_completions.d")
                .join(format!("{NAME}.fish")),
            format!("completions/{NAME}.fish"),
        ),
        (share.join(NAME).join("dashboards"), "dashboards".to_owned()),
        (
            share.join("doc").join(NAME).join("LICENSE-MIT"),
            "LICENSE-MIT".to_owned(),
        ),
        (
            share.join("doc").join(NAME).join("LICENSE-APACHE"),
            "LICENSE-APACHE".to_owned(),
        ),
        (
            share.join("doc").join(NAME).join("README.md"),
            "README.md".to_owned(),
        ),
    ];
    for (from, to) in copies {
        let to = dir.join(to);
        std::fs::create_dir_all(to.parent().context("a file in a directory")?)?;
        shell::run(Command::new("cp").args(["-a"]).arg(&from).arg(&to))?;
    }
    let tarball = dist.join(format!("{top}.tar.gz"));
    shell::run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
            .arg(&tarball)
            .arg("-C")
            .arg(dist)
            .arg(&top),
    )?;
    Ok(tarball)
}
