//! `cargo xtask offsets`: regenerates `observer/src/binary/layouts.json`, the
//! runtime struct offsets and wait-reason names per Go version that gobpf-sched
//! uses for binaries without DWARF.
//!
//! For each toolchain it builds the demo workload (any program carries the whole
//! runtime) and reads it back with `gobpf-sched inspect --json`, which takes the
//! offsets from that build's DWARF and the names from its symbol table: one
//! reader for both the table and live binaries.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::{shell, toolchains};

pub fn run(toolchains: &toolchains::Installed) -> Result<()> {
    let root = toolchains::workspace_root();
    let observer = root.join("target/release/gobpf-sched");
    let out_dir = root.join("target/offsets");
    std::fs::create_dir_all(&out_dir)?;
    let mut versions = BTreeMap::new();
    for go in &toolchains.go {
        let binary = out_dir.join(
            go.components()
                .rev()
                .nth(3)
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_else(|| "go".to_owned()),
        );
        toolchains::build_go(go, &root.join("xtask/workload"), &binary)?;
        let report = shell::output(
            Command::new(&observer)
                .args(["inspect", "--json"])
                .arg(&binary),
        )
        .with_context(|| format!("gobpf-sched inspect {} failed", binary.display()))?;
        let report: Value = serde_json::from_str(&report)?;
        ensure!(
            report["layout_from"]["source"] == "dwarf",
            "{} was not read from DWARF",
            binary.display()
        );
        let toolchain = report["go_version"].as_str().context("go_version")?;
        let version: Vec<&str> = toolchain
            .trim_start_matches("go")
            .split('.')
            .take(2)
            .collect();
        let key = version.join(".");
        eprintln!("offsets: go{key} from {toolchain}");
        versions.insert(
            key,
            json!({
                "toolchain": toolchain,
                "struct_offsets": report["struct_offsets"],
                "wait_reasons": report["wait_reasons"],
            }),
        );
    }
    let table = json!({
        "generated_by": "cargo xtask offsets (do not edit: run it again)",
        "versions": versions,
    });
    let path = root.join("observer/src/binary/layouts.json");
    std::fs::write(&path, serde_json::to_string_pretty(&table)? + "\n")?;
    eprintln!("offsets: wrote {}", path.display());
    Ok(())
}
