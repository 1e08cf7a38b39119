//! `cargo xtask fuzz`: coverage-guided fuzzing of the binary parsers with
//! cargo-fuzz and libFuzzer on the nightly toolchain (observer/fuzz). Each target
//! runs for its share of the duration, one after the other (one core for the
//! fuzzer, the other stays free), on a corpus kept in the cache directory and
//! seeded from real Go binaries (`fuzz_seeds`). It prints what each target ran
//! and found; a crash is left in the cache directory and fails the command.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    fuzz_seeds::{self, Inputs},
    shell,
    toolchains::{self, Installed},
};

/// The cargo-fuzz release verified with this machine kind's nightly.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The runtime structs the observer reads from DWARF (`binary::fields::ALL`):
/// the DWARF seeds start at their entries.
const DWARF_STRUCTS: &[&str] = &[
    "runtime.g",
    "runtime.m",
    "runtime.p",
    "runtime.schedt",
    "runtime.gQueue",
    "runtime.moduledata",
];

struct Target {
    name: &'static str,
    /// Shares of the duration: a whole binary takes a thousand times longer to
    /// parse than a prologue, and its target has the most code to cover.
    weight: u32,
    /// Longest input: a window target's header and window; a whole section or
    /// code otherwise (longer than every seed: libFuzzer would cut them).
    max_len: usize,
}

const TARGETS: &[Target] = &[
    Target {
        name: "elf",
        weight: 3,
        max_len: 1024,
    },
    Target {
        name: "pclntab",
        weight: 1,
        max_len: 1024,
    },
    Target {
        name: "dwarf",
        weight: 2,
        max_len: 1024,
    },
    Target {
        name: "buildinfo",
        weight: 1,
        max_len: 4096,
    },
    Target {
        name: "prologue",
        weight: 1,
        max_len: 64,
    },
    Target {
        name: "sched_globals",
        weight: 1,
        max_len: 16384,
    },
];

/// What one target did.
struct Outcome {
    runs: u64,
    seconds: u64,
    corpus: usize,
    /// Inputs that crashed, leaked, ran out of time or memory.
    findings: Vec<PathBuf>,
}

pub fn run(toolchains: &Installed, duration: Duration) -> Result<()> {
    install_cargo_fuzz()?;
    let root = toolchains::workspace_root();
    let fuzz_dir = root.join("observer/fuzz");
    let work = toolchains::cache_dir().join("fuzz");
    prepare(toolchains, &work)?;

    eprintln!("fuzz: building the targets (nightly, AddressSanitizer, overflow checks)");
    shell::run(&mut nightly_cargo_fuzz("build", &fuzz_dir))?;

    let shares: u32 = TARGETS.iter().map(|t| t.weight).sum();
    let mut outcomes = Vec::new();
    for target in TARGETS {
        let time = (duration * target.weight / shares).max(Duration::from_secs(1));
        eprintln!("fuzz: {} for {}s", target.name, time.as_secs());
        outcomes.push(fuzz(&fuzz_dir, &work.join(target.name), target, time)?);
    }

    println!(
        "{:<14} {:>6} {:>12} {:>9} {:>8}  findings",
        "target", "time", "executions", "exec/s", "corpus"
    );
    let (mut total, mut seconds) = (0, 0);
    let mut findings = Vec::new();
    for (target, outcome) in TARGETS.iter().zip(&outcomes) {
        total += outcome.runs;
        seconds += outcome.seconds;
        println!(
            "{:<14} {:>5}s {:>12} {:>9} {:>8}  {}",
            target.name,
            outcome.seconds,
            outcome.runs,
            outcome.runs / outcome.seconds.max(1),
            outcome.corpus,
            outcome.findings.len()
        );
        findings.extend(outcome.findings.iter().cloned());
    }
    println!(
        "{:<14} {seconds:>5}s {total:>12}           {:>8}  {}",
        "total",
        "",
        findings.len()
    );
    if !findings.is_empty() {
        let list: Vec<String> = findings.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} finding(s): {} (replay one with `cargo +nightly fuzz run --fuzz-dir \
             observer/fuzz TARGET FILE`, with {}={} for a window target)",
            findings.len(),
            list.join(", "),
            BASES_ENV,
            work.join("TARGET/bases").display()
        );
    }
    Ok(())
}

/// As in observer/fuzz/src/lib.rs: the directory of a window target's base files.
const BASES_ENV: &str = "GOBPF_SCHED_FUZZ_BASES";

fn install_cargo_fuzz() -> Result<()> {
    if shell::output(shell::cargo().args(["fuzz", "--version"])).is_some() {
        eprintln!("fuzz: cargo-fuzz present");
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} from crates.io (about 2 minutes)");
    shell::run(shell::cargo().args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("cannot install cargo-fuzz")
}

/// `cargo fuzz SUBCOMMAND` on the nightly toolchain (libFuzzer's
/// instrumentation needs it).
fn nightly_cargo_fuzz(subcommand: &str, fuzz_dir: &Path) -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir);
    command
}

/// Writes every target's base files and seeds, from the binaries built now.
fn prepare(toolchains: &Installed, work: &Path) -> Result<()> {
    let binaries_dir = work.join("binaries");
    std::fs::create_dir_all(&binaries_dir)?;
    eprintln!("fuzz: building the seed binaries");
    let (whole, dwarf) = fuzz_seeds::binaries(toolchains, &binaries_dir)?;
    let layouts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        toolchains::workspace_root().join("observer/src/binary/layouts.json"),
    )?)?;
    let layout_versions: Vec<String> = layouts["versions"]
        .as_object()
        .context("layouts.json has no versions")?
        .keys()
        .cloned()
        .collect();
    // Prologues and code come from the symbol table: the binaries that have one.
    let all: Vec<&fuzz_seeds::Binary> = whole.iter().chain(&dwarf).collect();
    for (target, inputs) in [
        ("elf", fuzz_seeds::whole_binaries(&whole, &[])?),
        ("pclntab", fuzz_seeds::pclntab(&whole)?),
        ("dwarf", fuzz_seeds::whole_binaries(&dwarf, DWARF_STRUCTS)?),
        ("buildinfo", fuzz_seeds::buildinfo(&whole)?),
        ("prologue", fuzz_seeds::prologue(&all)?),
        (
            "sched_globals",
            fuzz_seeds::sched_globals(&all, &layout_versions)?,
        ),
    ] {
        write_inputs(&work.join(target), &inputs)?;
    }
    Ok(())
}

/// `bases/` and `seeds/` of a target, written anew; `corpus/` is kept.
fn write_inputs(dir: &Path, inputs: &Inputs) -> Result<()> {
    for (sub, files) in [
        ("bases", inputs.bases.clone()),
        (
            "seeds",
            inputs
                .seeds
                .iter()
                .enumerate()
                .map(|(i, seed)| (format!("seed-{i:04}"), seed.clone()))
                .collect(),
        ),
    ] {
        let sub = dir.join(sub);
        if sub.exists() {
            std::fs::remove_dir_all(&sub)?;
        }
        std::fs::create_dir_all(&sub)?;
        for (name, data) in files {
            std::fs::write(sub.join(name), data)?;
        }
    }
    std::fs::create_dir_all(dir.join("corpus"))?;
    std::fs::create_dir_all(dir.join("artifacts"))?;
    Ok(())
}

/// Runs one target for `time`; its output goes to `fuzz.log` beside its corpus.
fn fuzz(fuzz_dir: &Path, dir: &Path, target: &Target, time: Duration) -> Result<Outcome> {
    let artifacts = dir.join("artifacts");
    let before = files_in(&artifacts);
    let log = dir.join("fuzz.log");
    let started = Instant::now();
    let status = nightly_cargo_fuzz("run", fuzz_dir)
        .arg(target.name)
        .arg(dir.join("corpus"))
        .arg(dir.join("seeds"))
        .arg("--")
        .arg(format!("-max_total_time={}", time.as_secs()))
        .arg(format!("-max_len={}", target.max_len))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // An input that takes this long is a finding (libFuzzer's default: 20 min).
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .env(BASES_ENV, dir.join("bases"))
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .stderr(Stdio::from(
            std::fs::File::options().append(true).open(&log)?,
        ))
        .status()
        .context("cannot run cargo fuzz")?;
    let text = std::fs::read_to_string(&log)?;
    let stat = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .and_then(|value| value.trim().parse().ok())
    };
    let findings: Vec<PathBuf> = files_in(&artifacts)
        .into_iter()
        .filter(|path| !before.contains(path))
        .collect();
    let Some(runs) = stat("number_of_executed_units") else {
        bail!(
            "{} printed no statistics ({status}): see {}",
            target.name,
            log.display()
        );
    };
    if !status.success() && findings.is_empty() {
        bail!(
            "{} failed ({status}) without a finding: see {}",
            target.name,
            log.display()
        );
    }
    Ok(Outcome {
        runs,
        seconds: started.elapsed().as_secs(),
        corpus: files_in(&dir.join("corpus")).len(),
        findings,
    })
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    files.sort();
    files
}
