//! `cargo xtask demo`: builds the bundled workload (xtask/workload), starts it and
//! runs `gobpf-sched attach` on it for a while: the live screen in a terminal
//! (`q` ends it early), text lines when piped.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{setup, toolchains};

pub fn run(toolchains: &toolchains::Installed, duration: &str, args: &[String]) -> Result<()> {
    setup::require_root("the demo attaches eBPF programs")?;
    let root = toolchains::workspace_root();
    let binary = root.join("target/demo/workload");
    let go = toolchains.newest();
    eprintln!("demo: building the workload with {}", go.display());
    toolchains::build_go(go, &root.join("xtask/workload"), &binary)?;
    let mut workload = Command::new(&binary)
        .args(["-for", "10m"])
        // Nothing of it on the terminal, where the live screen draws.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the workload")?;
    thread::sleep(Duration::from_millis(300));
    let observer = root.join("target/release/gobpf-sched");
    let status = Command::new(&observer)
        .args([
            "attach",
            "--pid",
            &workload.id().to_string(),
            "--duration",
            duration,
        ])
        .args(args)
        .status();
    let _ = workload.kill();
    let _ = workload.wait();
    let status = status.with_context(|| format!("cannot run {}", observer.display()))?;
    anyhow::ensure!(status.success(), "gobpf-sched failed ({status})");
    Ok(())
}
