//! `gobpf-sched inspect`: what gobpf-sched knows about a Go binary, and whether it
//! can trace it. No root needed for a path.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::{
    binary::{GoBinary, LayoutSource, SchedulerGlobals, SymbolSource, prologue::Placement},
    facet::Facet,
    sources::probes::{self, PlannedProbe},
    target::Target,
};

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A running process to inspect (its executable, as /proc/PID/exe).
    #[arg(long, short, conflicts_with = "path", required_unless_present = "path")]
    pub pid: Option<u32>,
    /// A Go executable to inspect.
    pub path: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    binary: String,
    go_version: &'a str,
    package_path: Option<&'a str>,
    module: Option<&'a str>,
    build_settings: BTreeMap<&'a str, &'a str>,
    pie: bool,
    dynamically_linked: bool,
    cgo_enabled: bool,
    stripped: bool,
    dwarf: bool,
    symbols_from: SymbolSource,
    pclntab_function_count: usize,
    layout_from: &'a LayoutSource,
    probes: Vec<ProbeReport>,
    /// `runtime.sched` and `runtime.allp` (link-time), for run-queue state.
    scheduler_globals: Option<SchedulerGlobals>,
    scheduler_globals_in_code: Option<SchedulerGlobals>,
    struct_offsets: &'a BTreeMap<String, u64>,
    wait_reasons: &'a [String],
    supported: bool,
}

#[derive(Serialize)]
struct ProbeReport {
    #[serde(flatten)]
    plan: PlannedProbe,
    symtab_address: Option<u64>,
    pclntab_address: Option<u64>,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let (path, shown_as) = match (args.pid, args.path) {
        (Some(pid), _) => {
            let target = Target::find(pid)?;
            let name = target.exe_name()?;
            (target.exe, format!("process {pid} ({name})"))
        }
        (None, Some(path)) => {
            let shown = path.display().to_string();
            (path, shown)
        }
        (None, None) => unreachable!("clap requires --pid or a path"),
    };
    let binary = GoBinary::open(&path, &shown_as)?;
    let probes = probes::plan(&binary, &Facet::ALL, false)?
        .into_iter()
        .map(|plan| ProbeReport {
            symtab_address: binary.symtab_functions.get(plan.function).copied(),
            pclntab_address: binary.pclntab_functions.get(plan.function).copied(),
            plan,
        })
        .collect();
    let report = Report {
        binary: shown_as,
        go_version: &binary.build.go_version,
        package_path: binary.build.package_path(),
        module: binary.build.module(),
        build_settings: binary.build.settings().into_iter().collect(),
        pie: binary.pie,
        dynamically_linked: binary.dynamically_linked,
        cgo_enabled: binary.build.setting("CGO_ENABLED") == Some("1"),
        stripped: !binary.has_symtab,
        dwarf: binary.has_dwarf,
        symbols_from: binary.symbols_from,
        pclntab_function_count: binary.pclntab_function_count,
        layout_from: &binary.layout_from,
        probes,
        scheduler_globals: binary.scheduler_globals,
        scheduler_globals_in_code: binary.scheduler_globals_in_code,
        struct_offsets: &binary.struct_offsets,
        wait_reasons: &binary.wait_reasons,
        // Everything above was found: GoBinary::open refuses what it cannot trace.
        supported: true,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn text(r: &Report<'_>) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<16}{value}\n"));
    line("binary", r.binary.clone());
    line("go version", r.go_version.to_owned());
    if let Some(path) = r.package_path {
        line("package", path.to_owned());
    }
    if let Some(module) = r.module {
        line("module", module.replace('\t', " "));
    }
    let settings: Vec<String> = r
        .build_settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    line("build settings", settings.join(" "));
    line(
        "build mode",
        format!(
            "PIE {} · cgo {} · dynamically linked {} · stripped {} · DWARF {}",
            yes_no(r.pie),
            yes_no(r.cgo_enabled),
            yes_no(r.dynamically_linked),
            yes_no(r.stripped),
            yes_no(r.dwarf)
        ),
    );
    line(
        "functions from",
        match r.symbols_from {
            SymbolSource::Symtab => ".symtab".to_owned(),
            SymbolSource::Pclntab => format!(".gopclntab ({} functions)", r.pclntab_function_count),
        },
    );
    line(
        "layout from",
        match r.layout_from {
            LayoutSource::Dwarf => "DWARF and .symtab of this binary".to_owned(),
            LayoutSource::Table { version, toolchain } => {
                format!("offsets table for go{version} (generated with {toolchain})")
            }
        },
    );
    line(
        "run queues at",
        match r.scheduler_globals {
            Some(g) => format!(
                "runtime.sched {:#x}, runtime.allp {:#x} (from {:?})",
                g.sched, g.allp, g.found_in
            ),
            None => "unknown: run-queue state cannot be read".to_owned(),
        },
    );
    line("supported", yes_no(r.supported).to_owned());
    out.push_str("probes\n");
    for probe in &r.probes {
        let p = &probe.plan;
        let site = match p.placement {
            Placement::StackCheckJump => "jbe of the stack check",
            Placement::Entry => "entry (no stack check)",
        };
        out.push_str(&format!(
            "  {:<28}{:#10x}  +{:<3}{site:<24}file offset {:#x}\n",
            p.function, p.address, p.site_offset, p.file_offset
        ));
    }
    out.push_str("struct offsets\n");
    for (member, offset) in r.struct_offsets {
        out.push_str(&format!("  {member:<28}{offset}\n"));
    }
    let named: Vec<String> = r
        .wait_reasons
        .iter()
        .enumerate()
        .filter(|(_, name)| !name.is_empty())
        .map(|(i, name)| format!("{i}={name}"))
        .collect();
    out.push_str(&format!("wait reasons    {}\n", named.join(", ")));
    out
}
