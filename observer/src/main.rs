//! The `gobpf-sched` command line; the work is in the library (src/lib.rs).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gobpf_sched::{inspect, session};

#[derive(Parser)]
#[command(name = "gobpf-sched", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a running Go program and report what its scheduler does.
    Attach(session::AttachArgs),
    /// Start a Go program and watch it from its first instruction (the
    /// reports go to stderr; the exit status is the program's).
    Run(session::RunArgs),
    /// Show what gobpf-sched reads from a Go binary and whether it can trace it.
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => session::run(args).map(|()| 0),
        Command::Run(args) => session::run_command(args),
        Command::Inspect(args) => inspect::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`| head`): end quietly, as `grep | head` does,
        // with the status a shell gives a process killed by SIGPIPE.
        Err(error) if is_broken_pipe(&error) => ExitCode::from(141),
        Err(error) => {
            // One line: the context chain, outermost first.
            eprintln!("gobpf-sched: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
