//! gobpf-sched: watch the Go runtime scheduler of a running process with eBPF.
//!
//! Flow: `binary` (what the executable is) → `probes` (load + attach kernel
//! programs) → `collect` (drain maps and ring buffer) → `aggregate` (per interval
//! and whole-run numbers) → `output` (text or JSON lines). `session` runs it.

mod aggregate;
mod binary;
mod collect;
mod output;
mod probes;
mod session;
mod system;
mod target;
mod wait_reasons;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gobpf-sched", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a running Go program and report what its scheduler does.
    Attach(AttachArgs),
}

#[derive(clap::Args)]
pub struct AttachArgs {
    /// Process id of the Go program to watch.
    #[arg(long, short)]
    pub pid: u32,
    /// How often to print a summary (e.g. 500ms, 1s, 2m).
    #[arg(long, short, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C or the target exits).
    #[arg(long, short, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many goroutines to list in each summary.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also print where each probe is attached.
    #[arg(long, short)]
    pub verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => session::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the context chain, outermost first.
            eprintln!("gobpf-sched: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
