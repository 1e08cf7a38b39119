//! `gobpf-sched run -- COMMAND`: the program is started held, so that it is
//! watched from its first instruction. The child asks to be traced
//! (`PTRACE_TRACEME`) before it execs, so the kernel stops it with SIGTRAP
//! right after the exec, with its new image mapped and not one instruction of
//! it run; the probes are attached to that process, then it is let go
//! (`PTRACE_DETACH`) and runs untraced. Its stdin, stdout and stderr are its
//! own; its exit status becomes ours.

use std::{
    ffi::OsString,
    os::unix::{
        fs::PermissionsExt,
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

/// A started program, stopped at its first instruction until released.
pub struct Launched {
    child: Child,
    held: bool,
}

impl Launched {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `command` (its first word found in PATH as a shell would) and
    /// waits until it is stopped after its exec.
    pub fn start(command: &[OsString]) -> Result<Self> {
        let Some((program, args)) = command.split_first() else {
            bail!("run needs a command: gobpf-sched run [options] -- COMMAND ARGS...");
        };
        let path = find_program(Path::new(program))?;
        let mut child = Command::new(&path);
        child.args(args);
        // SAFETY: between fork and exec only async-signal-safe calls: ptrace.
        unsafe {
            child.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = child
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let mut launched = Self { child, held: true };
        launched.wait_for_exec_stop()?;
        Ok(launched)
    }

    fn wait_for_exec_stop(&mut self) -> Result<()> {
        let pid = self.pid() as libc::pid_t;
        let mut status = 0;
        // SAFETY: waits for our own child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            bail!(
                "cannot wait for process {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        if !libc::WIFSTOPPED(status) || libc::WSTOPSIG(status) != libc::SIGTRAP {
            self.held = false;
            bail!(
                "process {pid} did not stop at its exec (wait status {status:#x}): it cannot be \
                 watched from its start"
            );
        }
        Ok(())
    }

    /// Lets the program run (it is no longer traced).
    pub fn release(&mut self) -> Result<()> {
        if !self.held {
            return Ok(());
        }
        // SAFETY: detaches our own stopped tracee, delivering no signal.
        if unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid() as libc::pid_t, 0, 0) } != 0 {
            bail!(
                "cannot let process {} run: {}",
                self.pid(),
                std::io::Error::last_os_error()
            );
        }
        self.held = false;
        Ok(())
    }

    /// Waits for the program to exit; returns the status a shell would show:
    /// its exit code, or 128 + the signal that killed it.
    pub fn exit_code(mut self) -> Result<u8> {
        let status = self.child.wait().context("cannot wait for the program")?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => 128 + signal as u8,
            (None, None) => 1,
        })
    }
}

impl Drop for Launched {
    /// A program never released (watching it failed) is killed, not left
    /// stopped forever.
    fn drop(&mut self) {
        if self.held {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `program` as `execvp` would find it: a path when it has a slash, else the
/// first executable of that name in PATH.
fn find_program(program: &Path) -> Result<PathBuf> {
    if program.components().count() > 1 {
        return Ok(program.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .with_context(|| format!("{} is not found in PATH", program.display()))
}

/// Whether the last SIGINT came from the terminal (Ctrl-C reaches the whole
/// foreground process group: the program has it already) rather than from a
/// process that sent it to us alone, which must be forwarded.
static LAST_INTERRUPT_FROM_TERMINAL: AtomicBool = AtomicBool::new(false);

/// Starts noting where SIGINTs come from (beside tokio's own handler).
pub fn track_interrupt_origin() -> Result<()> {
    // SAFETY: the action only stores to an atomic: async-signal-safe.
    unsafe {
        signal_hook_registry::register_sigaction(libc::SIGINT, |info: &libc::siginfo_t| {
            LAST_INTERRUPT_FROM_TERMINAL.store(info.si_code == libc::SI_KERNEL, Ordering::SeqCst);
        })
    }
    .context("cannot watch SIGINT")?;
    Ok(())
}

pub fn last_interrupt_from_terminal() -> bool {
    LAST_INTERRUPT_FROM_TERMINAL.load(Ordering::SeqCst)
}

/// Sends `signal` to process `pid` (the program `run` started).
pub fn forward(pid: u32, signal: i32) {
    // SAFETY: kill only sends a signal.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}
