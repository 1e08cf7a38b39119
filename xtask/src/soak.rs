//! `cargo xtask soak --duration 5m`: the HTTP workload under bounded local load
//! (4 client goroutines on loopback) with `gobpf-sched attach --json --interval
//! 1s`; prints drops, request errors, the observer's CPU and RSS at the start and
//! the end, and the target's throughput against a bare run. Not part of CI.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    bench::{
        Tracer, Workload, build_workloads, cpu_seconds, expect_line, observe_json, peak_rss_kb,
    },
    setup, toolchains,
};

pub fn run(toolchains: &toolchains::Installed, duration: Duration) -> Result<()> {
    setup::require_root("the soak attaches eBPF programs")?;
    let binary = build_workloads(toolchains)?;
    let observer = toolchains::workspace_root().join("target/release/gobpf-sched");

    // The bare rate, over a fifth of the soak (10 s to 60 s).
    let bare_time = (duration / 5).clamp(Duration::from_secs(10), Duration::from_secs(60));
    let mut bare = Workload::start(
        &binary,
        "httpfor",
        bare_time.as_millis() as u64,
        Tracer::Bare,
    )?;
    let bare_ns = bare.go()?;
    let _ = bare.child.wait();

    let mut target = Workload::start(
        &binary,
        "httpfor",
        duration.as_millis() as u64,
        Tracer::Bare,
    )?;
    let pid = target.child.id().to_string();
    let (mut tracer, lines) = observe_json(&observer, &pid)?;
    let observer_pid = tracer.id();
    let started = Instant::now();
    let cpu_at_start = cpu_seconds(observer_pid).context("observer CPU")?;
    let rss_at_start = rss_kb(observer_pid, "VmRSS:").context("observer RSS")?;
    // Sample the observer's RSS while the target runs.
    let sampler = std::thread::spawn(move || {
        let mut last = 0;
        while let Some(rss) = rss_kb(observer_pid, "VmRSS:") {
            last = rss;
            std::thread::sleep(Duration::from_secs(1));
            if started.elapsed() > duration {
                break;
            }
        }
        last
    });
    let traced_ns = target.go()?;
    let requests = expect_line(&mut target.stdout, "requests ")?;
    let cpu = cpu_seconds(observer_pid).context("observer CPU")? - cpu_at_start;
    let wall = started.elapsed().as_secs_f64();
    let peak = peak_rss_kb(observer_pid);
    let rss_at_end = sampler.join().unwrap_or(0);
    let _ = target.child.wait();
    let _ = tracer.wait();
    let summary = lines
        .join()
        .ok()
        .and_then(|lines| lines.into_iter().find(|v| v["type"] == "summary"))
        .context("gobpf-sched printed no summary")?;

    Soak {
        wall,
        requests,
        traced_ns,
        bare_ns,
        summary,
        cpu,
        rss_kb: [rss_at_start, rss_at_end, peak.unwrap_or(0)],
    }
    .print();
    Ok(())
}

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a soak measured.
struct Soak {
    wall: f64,
    /// The workload's "requests R errors E" line.
    requests: String,
    traced_ns: f64,
    bare_ns: f64,
    summary: Value,
    /// The observer's CPU seconds, and its RSS at start, end and peak.
    cpu: f64,
    rss_kb: [u64; 3],
}

impl Soak {
    fn print(&self) {
        let Self {
            wall,
            requests,
            traced_ns,
            bare_ns,
            summary,
            cpu,
            rss_kb: [start, end, peak],
        } = self;
        println!("soak: {wall:.0} s of HTTP load under gobpf-sched attach --json --interval 1s");
        println!(
            "  target        {requests}; {:.0} req/s traced, {:.0} req/s bare ({:.0}%)",
            1e9 / traced_ns,
            1e9 / bare_ns,
            100.0 * bare_ns / traced_ns
        );
        println!("  dropped       {}", summary["dropped"]);
        println!(
            "  lost          {} latency samples, {} goroutine totals",
            summary["lost_latency_samples"], summary["lost_goroutine_totals"]
        );
        println!(
            "  observer CPU  {:.1}% of a core ({cpu:.2} s in {wall:.0} s)",
            100.0 * cpu / wall
        );
        println!(
            "  observer RSS  {} MB at start, {} MB at the end, {} MB peak",
            start / 1024,
            end / 1024,
            peak / 1024
        );
    }
}
