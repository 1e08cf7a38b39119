//! The `gobpf-sched` command line; the work is in the library (src/lib.rs).

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (roff: gobpf-sched.1 and one per subcommand) into
    /// DIR, as the packages install them.
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => session::run(args).map(|()| 0),
        Command::Run(args) => session::run_command(args),
        Command::Inspect(args) => inspect::run(args).map(|()| 0),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "gobpf-sched",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Manpages { dir } => clap_mangen::generate_to(Cli::command(), &dir)
            .map(|()| 0)
            .map_err(|e| anyhow::anyhow!("cannot write the man pages into {}: {e}", dir.display())),
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
