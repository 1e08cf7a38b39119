//! Project tasks: `cargo xtask setup | build | test | bench | soak | offsets | demo | fuzz |
//! dist`.
//!
//! Every install step lives in `setup` and is idempotent: a fresh machine of this
//! project's kind gets everything from Debian packages, crates.io and PyPI; a
//! machine that has it all passes through in seconds.

mod bench;
mod bench_node;
mod demo;
mod dist;
mod fuzz;
mod fuzz_seeds;
mod offsets;
mod setup;
mod shell;
mod soak;
mod toolchains;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, nightly rust-src, bpf-linker, Go toolchains.
    Setup,
    /// Set up, then build the release binary target/release/gobpf-sched.
    Build,
    /// Set up, then run every test (unit and integration; needs root).
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Measure what tracing costs Go workloads: bare, gobpf-sched, bpftrace, runtime/trace;
    /// then 50 Go processes under one `attach --all`.
    Bench {
        /// `node`: only the node-wide part (50 Go processes, one `attach --all`:
        /// attach time, observer RSS and CPU, per-process overhead).
        part: Option<BenchPart>,
    },
    /// The HTTP workload under load with the observer attached: drops, errors,
    /// the observer's CPU and RSS, throughput against bare (not part of CI).
    Soak {
        /// How long to load and watch.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Regenerate observer/src/binary/layouts.json from every Go toolchain's DWARF.
    Offsets,
    /// Set up, build, start a bundled Go workload and watch it live.
    Demo {
        /// How long to watch.
        #[arg(long, default_value = "15s")]
        duration: String,
        /// Extra arguments for `gobpf-sched attach` (e.g. --json).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build, then package: a Debian package and a release tarball in
    /// target/dist (binary, man pages, completions, dashboards, licences).
    Dist,
    /// Set up, then fuzz the binary parsers (cargo-fuzz, libFuzzer, nightly), seeded
    /// from real Go binaries; prints executions and findings per target.
    Fuzz {
        /// Fuzzing time in all, shared by the targets (the whole-binary ones get more).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchPart {
    /// Every part (the default).
    All,
    /// 50 Go processes watched by one `gobpf-sched attach --all`.
    Node,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Build => setup::run().and_then(|_| build()),
        Command::Bench { part } => setup::run()
            .and_then(|toolchains| build().map(|()| toolchains))
            .and_then(|toolchains| match part {
                Some(BenchPart::Node) => bench::run_node(&toolchains),
                Some(BenchPart::All) | None => bench::run(&toolchains),
            }),
        Command::Soak { duration } => setup::run()
            .and_then(|toolchains| build().map(|()| toolchains))
            .and_then(|toolchains| soak::run(&toolchains, duration)),
        Command::Offsets => setup::run()
            .and_then(|toolchains| build().map(|()| toolchains))
            .and_then(|toolchains| offsets::run(&toolchains)),
        Command::Test { args } => setup::run().and_then(|toolchains| test(&toolchains, &args)),
        Command::Demo { duration, args } => setup::run()
            .and_then(|toolchains| build().map(|()| toolchains))
            .and_then(|toolchains| demo::run(&toolchains, &duration, &args)),
        Command::Dist => setup::run()
            .and_then(|_| build())
            .and_then(|()| dist::run().map(|_| ())),
        Command::Fuzz { duration } => {
            setup::run().and_then(|toolchains| fuzz::run(&toolchains, duration))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> anyhow::Result<()> {
    shell::run(shell::cargo().args(["build", "--release", "--package", "gobpf-sched"]))
}

fn test(toolchains: &toolchains::Installed, args: &[String]) -> anyhow::Result<()> {
    setup::require_root("the integration tests load eBPF programs")?;
    // The packages are tested too: installed with dpkg, run from there.
    build()?;
    let packages = dist::run()?;
    let mut cargo = shell::cargo();
    cargo.args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "gobpf-sched-ebpf",
    ]);
    cargo.env(toolchains::ENV, toolchains.env_value());
    cargo.env(toolchains::FULL_ENV, toolchains.full_env_value());
    cargo.env(toolchains::CACHE_ENV, toolchains::cache_dir());
    cargo.env("GOBPF_SCHED_DEB", &packages.deb);
    cargo.env("GOBPF_SCHED_TARBALL", &packages.tarball);
    cargo.env(
        "GOBPF_SCHED_PERFETTO_PYTHONPATH",
        setup::perfetto_python_path(),
    );
    cargo.env("GOBPF_SCHED_OTLP_PYTHONPATH", setup::otlp_python_path());
    cargo.env(
        "GOBPF_SCHED_K8S_VALIDATE_PYTHONPATH",
        setup::kubernetes_validate_path(),
    );
    // Two attach tests at a time fit the 2-core machines this runs on.
    cargo.args(["--", "--test-threads=2"]).args(args);
    shell::run(&mut cargo)
}
