//! Shared by the integration tests: real Go toolchains, real fixture binaries, the
//! real observer binary attached to real processes.
#![allow(dead_code)] // each test file uses a different part

pub mod scenario;

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// A Go toolchain named by `cargo xtask test` (GOBPF_SCHED_GO_TOOLCHAINS).
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub go: PathBuf,
    /// `go env GOVERSION`, e.g. `go1.25.5`.
    pub version: String,
}

impl Toolchain {
    /// (major, minor), e.g. (1, 25).
    pub fn minor(&self) -> (u32, u32) {
        let mut parts = self.version.trim_start_matches("go").split('.');
        let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (next(), next())
    }

    /// Uprobes a full session attaches: schedule, casgstatus, sigtrampgo, the
    /// preemption function, goyield_m and preemptPark; from Go 1.26 also
    /// entersyscall, entersyscallblock and exitsyscall (before, the casgstatus
    /// probe sees syscalls).
    pub fn expected_uprobes(&self) -> usize {
        if self.minor() >= (1, 26) { 9 } else { 6 }
    }

    /// The function whose calls are preemptions: `goschedImpl(gp, preempted)`
    /// from Go 1.22, `gopreempt_m` before.
    pub fn preemption_function(&self) -> &'static str {
        if self.minor() >= (1, 22) {
            "runtime.goschedImpl"
        } else {
            "runtime.gopreempt_m"
        }
    }
}

pub fn toolchains() -> Vec<Toolchain> {
    let list = std::env::var("GOBPF_SCHED_GO_TOOLCHAINS").expect(
        "GOBPF_SCHED_GO_TOOLCHAINS is not set: run the tests with `cargo xtask test`, \
         which installs the Go toolchains and names them",
    );
    list.split(':')
        .filter(|p| !p.is_empty())
        .map(|go| {
            let go = PathBuf::from(go);
            let output = Command::new(&go)
                .args(["env", "GOVERSION"])
                .env("GOTOOLCHAIN", "local")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", go.display()));
            assert!(
                output.status.success(),
                "{} env GOVERSION failed",
                go.display()
            );
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            Toolchain { go, version }
        })
        .collect()
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("GOBPF_SCHED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("gobpf-sched-cache"))
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// How a fixture is built: the build modes production Go programs come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `go build`: static, symbol table and DWARF.
    Default,
    /// `-ldflags="-s -w"`: no symbol table, no DWARF.
    Stripped,
    /// `-buildmode=pie`.
    Pie,
    /// CGO_ENABLED=1 with a C call: dynamically linked against libc.
    Cgo,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Default, Mode::Stripped, Mode::Pie, Mode::Cgo];

    fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Default => &[],
            Mode::Stripped => &["-ldflags=-s -w"],
            Mode::Pie => &["-buildmode=pie"],
            Mode::Cgo => &["-tags=cgo_fixture"],
        }
    }
}

/// The toolchains that run the full attach tests in every build mode.
pub fn full_matrix_toolchains() -> Vec<Toolchain> {
    let full = std::env::var("GOBPF_SCHED_GO_FULL").unwrap_or_default();
    let full: Vec<&str> = full.split(':').collect();
    toolchains()
        .into_iter()
        .filter(|t| full.contains(&t.go.to_string_lossy().as_ref()))
        .collect()
}

/// Builds the Go package `tests/fixtures/<fixture>` with `toolchain` in `mode`;
/// cached by toolchain, mode and source text.
pub fn build(toolchain: &Toolchain, fixture: &str, mode: Mode) -> PathBuf {
    build_with(toolchain, fixture, mode, &[])
}

/// Like [`build`], with extra `go build` flags.
pub fn build_with(toolchain: &Toolchain, fixture: &str, mode: Mode, extra: &[&str]) -> PathBuf {
    let source_dir = fixtures_dir().join(fixture);
    let mut hasher = DefaultHasher::new();
    let mut sources: Vec<_> = std::fs::read_dir(&source_dir)
        .expect("fixture dir")
        .map(|entry| entry.expect("fixture file").path())
        .collect();
    sources.sort();
    for source in &sources {
        std::fs::read(source)
            .expect("fixture source")
            .hash(&mut hasher);
    }
    (mode.flags(), extra).hash(&mut hasher);
    let dir = cache_dir().join("fixtures").join(&toolchain.version);
    std::fs::create_dir_all(&dir).expect("fixture cache dir");
    let name = format!("{fixture}-{mode:?}-{:016x}", hasher.finish()).to_lowercase();
    let binary = dir.join(&name);
    if binary.exists() {
        return binary;
    }
    // Build beside, then rename: tests running in parallel (threads of one
    // process too) never see half a file.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let partial = dir.join(format!(
        "{name}.{}.{}.partial",
        std::process::id(),
        BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let output = Command::new(&toolchain.go)
        .arg("build")
        .args(mode.flags())
        .args(extra)
        .arg("-o")
        .arg(&partial)
        .arg(".")
        .current_dir(&source_dir)
        .env("CGO_ENABLED", if mode == Mode::Cgo { "1" } else { "0" })
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache_dir().join("gocache"))
        .output()
        .expect("go build");
    assert!(
        output.status.success(),
        "go build {fixture} ({mode:?}) with {} failed: {}",
        toolchain.version,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &binary).expect("rename fixture");
    binary
}

/// A running fixture that printed "ready" and waits for a line on stdin.
pub struct Fixture {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Fixture {
    pub fn spawn(binary: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(binary);
        command.args(args);
        Self::spawn_command(command)
    }

    /// Starts `command`, which must end up running a fixture.
    pub fn spawn_command(mut command: Command) -> Self {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        // A binary a test has just written can be briefly "busy": a child forked by
        // another test thread holds the write descriptor until it execs.
        let mut attempts = 0;
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                spawned => break spawned.expect("start fixture"),
            }
        };
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("fixture stdout");
        assert_eq!(line.trim(), "ready", "fixture did not start");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the fixture run its work.
    pub fn start(&mut self) {
        let mut stdin = self.stdin.take().expect("started twice");
        stdin.write_all(b"go\n").expect("write to fixture");
    }

    /// The fixture's stdout lines up to `last` (excluded).
    pub fn lines_until(&mut self, last: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for line in (&mut self.stdout).lines() {
            let line = line.expect("fixture stdout");
            if line == last {
                return lines;
            }
            lines.push(line);
        }
        panic!("the fixture ended before printing {last}: {lines:?}");
    }

    /// Waits for the fixture to exit; returns its status and the rest of its stdout.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let mut rest = String::new();
        for line in (&mut self.stdout).lines() {
            rest.push_str(&line.expect("fixture stdout"));
            rest.push('\n');
        }
        (self.child.wait().expect("wait fixture"), rest)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn observer_binary() -> &'static str {
    env!("CARGO_BIN_EXE_gobpf-sched")
}

/// A running `gobpf-sched attach`.
pub struct Observer {
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    pub stderr_lines: Vec<String>,
}

/// The observer's output once it exited.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Finished {
    /// stdout parsed as JSON lines.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// The one object of the given `type`.
    pub fn only(&self, kind: &str) -> Value {
        let mut found: Vec<Value> = self
            .json()
            .into_iter()
            .filter(|v| v["type"] == kind)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {kind} line; stderr: {}",
            self.stderr
        );
        found.remove(0)
    }
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

impl Observer {
    /// Starts `gobpf-sched attach --pid PID ARGS` and waits until it says it
    /// attached. In exact mode (the tests that count transitions exactly) unless
    /// ARGS set an `--overhead-budget`.
    pub fn attach(pid: u32, args: &[&str]) -> Self {
        Self::attach_using(Path::new(observer_binary()), pid, args)
    }

    /// Like [`Observer::attach`], with the gobpf-sched binary at `binary`
    /// (an installed one).
    pub fn attach_using(binary: &Path, pid: u32, args: &[&str]) -> Self {
        Self::attach_with_env(binary, pid, args, &[])
    }

    /// Like [`Observer::attach_using`], with `env` set for the observer.
    pub fn attach_with_env(binary: &Path, pid: u32, args: &[&str], env: &[(&str, &str)]) -> Self {
        let exact: &[&str] = if args.contains(&"--overhead-budget") {
            &[]
        } else {
            &["--exact"]
        };
        let mut child = Command::new(binary)
            .args(["attach", "--pid", &pid.to_string()])
            .args(exact)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gobpf-sched");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let mut observer = Self {
            child,
            stdout,
            stderr,
            stderr_lines: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match observer.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let attached = line.contains(": attached to ");
                    observer.stderr_lines.push(line);
                    if attached {
                        return observer;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(
                        Instant::now() < deadline,
                        "gobpf-sched did not attach in 60 s"
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "gobpf-sched exited before attaching: {}",
                    observer.stderr_lines.join("\n")
                ),
            }
        }
    }

    /// Waits (at most 60 s) until a line of stderr holds `text` (lines read
    /// before count); returns that line.
    pub fn wait_for_stderr(&mut self, text: &str) -> String {
        if let Some(line) = self.stderr_lines.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    self.stderr_lines.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => assert!(
                    Instant::now() < deadline,
                    "gobpf-sched never said {text:?}: {}",
                    self.stderr_lines.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "gobpf-sched exited without saying {text:?}: {}",
                    self.stderr_lines.join("\n")
                ),
            }
        }
    }

    /// Waits (at most 60 s) for the observer to exit on its own.
    pub fn wait(mut self) -> Finished {
        let status = wait_at_most(&mut self.child, Duration::from_secs(60), "on its own");
        let stdout: Vec<String> = self.stdout.iter().collect();
        self.stderr_lines.extend(self.stderr.iter());
        Finished {
            status,
            stdout,
            stderr: self.stderr_lines.join("\n"),
        }
    }
}

/// Watches `fixtures` side by side (`attach --pid A --pid B ... ARGS`, the
/// sessions of `--all`): once each is attached, lets them run to their end;
/// the observer then ends by itself, and must end well.
pub fn watch_side_by_side(mut fixtures: Vec<Fixture>, args: &[&str]) -> Finished {
    let pids: Vec<u32> = fixtures.iter().map(Fixture::pid).collect();
    let others: Vec<String> = pids[1..].iter().map(u32::to_string).collect();
    let mut all: Vec<&str> = args.to_vec();
    for pid in &others {
        all.extend(["--pid", pid]);
    }
    let mut observer = Observer::attach(pids[0], &all);
    for pid in &pids {
        observer.wait_for_stderr(&format!("attached to process {pid} "));
    }
    for fixture in &mut fixtures {
        fixture.start();
    }
    for fixture in fixtures {
        let (status, _) = fixture.finish();
        assert!(status.success(), "a fixture failed: {status}");
    }
    let finished = observer.wait();
    assert!(finished.status.success(), "{}", finished.stderr);
    finished
}

/// Lets `fixture` run its work until it prints "done" (and nothing before)
/// and exits successfully; then waits for `observer`, which must end well.
pub fn watch_to_the_end(mut fixture: Fixture, observer: Observer) -> Finished {
    fixture.start();
    assert!(fixture.lines_until("done").is_empty());
    let (status, _) = fixture.finish();
    assert!(status.success(), "the fixture failed: {status}");
    let finished = observer.wait();
    assert!(finished.status.success(), "{}", finished.stderr);
    finished
}

/// Runs `gobpf-sched ARGS` to completion (for the error cases).
pub fn run_observer(wrapper: &[&str], args: &[&str]) -> (ExitStatus, String) {
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(observer_binary());
            command
        }
        None => Command::new(observer_binary()),
    };
    let output = command.args(args).output().expect("run gobpf-sched");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `gobpf-sched ARGS` and checks it fails as bad input must: exit code 1,
/// one line on stderr that says `expected`, no panic.
pub fn assert_fails(wrapper: &[&str], args: &[&str], expected: &str) {
    let (status, stderr) = run_observer(wrapper, args);
    assert!(!status.success(), "{args:?} succeeded");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"));
}

/// An executable file removed when dropped.
pub struct TempBinary(pub PathBuf);

impl TempBinary {
    pub fn write(data: &[u8]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("gobpf-sched-test-{}-{n}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(path)
    }
}

impl Drop for TempBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the fixture `binary ARGS` to its end under `gobpf-sched attach OBSERVER_ARGS`
/// (which must include `--json`); checks that both succeeded and that nothing was
/// dropped. Returns the fixture's stdout, the observer's output and its summary.
pub fn traced_run(
    binary: &Path,
    args: &[&str],
    observer_args: &[&str],
    what: &str,
) -> (String, Finished, Value) {
    traced_fixture(Fixture::spawn(binary, args), observer_args, what)
}

/// Like [`traced_run`], for a fixture already started some other way.
pub fn traced_fixture(
    mut fixture: Fixture,
    observer_args: &[&str],
    what: &str,
) -> (String, Finished, Value) {
    let observer = Observer::attach(fixture.pid(), observer_args);
    fixture.start();
    let (status, output) = fixture.finish();
    assert!(status.success(), "{what}: the traced fixture failed");
    let run = observer.wait();
    assert!(run.status.success(), "{what}: {}", run.stderr);
    let summary = run.only("summary");
    assert_eq!(count(&summary, "dropped"), 0, "{what}: events dropped");
    (output, run, summary)
}

/// The sum of a JSON histogram's counts.
pub fn histogram_total(histogram: &Value) -> u64 {
    histogram
        .as_array()
        .expect("a histogram")
        .iter()
        .map(|b| count(b, "count"))
        .sum()
}

/// A count from a JSON object, 0 when absent.
pub fn count(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or(0)
}

/// The row of `goid` in a `top_goroutines` list.
pub fn goroutine(summary: &Value, goid: u64) -> Value {
    summary["top_goroutines"]
        .as_array()
        .expect("top_goroutines")
        .iter()
        .find(|row| row["goid"] == goid)
        .cloned()
        .unwrap_or_else(|| panic!("goroutine {goid} not in the summary: {summary}"))
}

/// Parses the fixture's `goids a=1 b=2` line.
pub fn goids(stdout: &str) -> std::collections::HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("goids "))
        .unwrap_or_else(|| panic!("no goids line in fixture output: {stdout}"));
    line["goids ".len()..]
        .split_whitespace()
        .filter_map(|pair| {
            let (name, id) = pair.split_once('=')?;
            Some((name.to_owned(), id.parse().ok()?))
        })
        .collect()
}

/// What `go tool addr2line` of `toolchain` prints for each address of
/// `binary`: (function, file, line).
pub fn addr2line(
    toolchain: &Toolchain,
    binary: &Path,
    addresses: &[u64],
) -> Vec<(String, String, i64)> {
    let mut child = Command::new(&toolchain.go)
        .args(["tool", "addr2line"])
        .arg(binary)
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("go tool addr2line");
    let input: String = addresses.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("addr2line output");
    writer.join().expect("writer").expect("write addresses");
    assert!(output.status.success(), "addr2line failed");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2 * addresses.len(),
        "addr2line answered {text}"
    );
    lines
        .chunks(2)
        .map(|pair| {
            let (file, line) = pair[1].rsplit_once(':').expect("file:line");
            (
                pair[0].to_owned(),
                file.to_owned(),
                line.parse().expect("line number"),
            )
        })
        .collect()
}

/// `go tool pprof ARGS BINARY PROFILE` of `toolchain`: its stdout (it must succeed).
pub fn go_tool_pprof(
    toolchain: &Toolchain,
    args: &[&str],
    binary: &Path,
    profile: &Path,
) -> String {
    let output = Command::new(&toolchain.go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(binary)
        .arg(profile)
        .env("GOTOOLCHAIN", "local")
        // No network symbolization, no home-directory binary search.
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("go tool pprof");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pprof {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A real Go binary whose build info claims another Go version: same length, so
/// the file stays valid; stands in for toolchains this machine cannot install.
pub fn claiming_version(binary: &Path, claimed: &str) -> TempBinary {
    let mut data = std::fs::read(binary).unwrap();
    // The version follows the 32-byte header as a length byte and the text.
    let header = find(&data, b"\xff Go buildinf:").expect("buildinfo header");
    let len = data[header + 32] as usize;
    assert_eq!(
        len,
        claimed.len(),
        "{claimed} must be as long as the real version"
    );
    data[header + 33..header + 33 + len].copy_from_slice(claimed.as_bytes());
    TempBinary::write(&data)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The children of process `pid` (the program `unshare --fork` started).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Starts the fixture `binary ARGS` in pid and mount namespaces of its own
/// (`unshare --pid --fork --mount-proc`, as a container runtime would); returns
/// it and the program's pid (here: unshare's child, killed with unshare).
pub fn spawn_in_namespaces(binary: &Path, args: &[&str]) -> (Fixture, u32) {
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(binary)
        .args(args);
    let fixture = Fixture::spawn_command(command);
    let pid = children(fixture.pid())
        .first()
        .copied()
        .expect("the program under unshare");
    (fixture, pid)
}

/// The cgroup (v2) of a containerd container in a burstable pod, systemd
/// driver; removed when dropped, with the slices made for it once empty.
pub struct ContainerCgroup(Vec<PathBuf>);

/// The cgroups the ContainerCgroups of this process created (the pod and
/// kubepods slices are shared): removed by whichever container leaves them empty.
static CREATED_CGROUPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl ContainerCgroup {
    /// `container_id`: 64 hex digits; `pod_uid`: a UUID.
    pub fn create(container_id: &str, pod_uid: &str) -> Self {
        let root = PathBuf::from("/sys/fs/cgroup/unified");
        let root = if root.join("cgroup.procs").exists() {
            root
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let mut created = CREATED_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
        let mut dirs = Vec::new();
        let mut dir = root;
        for part in [
            "kubepods.slice".to_owned(),
            "kubepods-burstable.slice".to_owned(),
            format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_")),
            format!("cri-containerd-{container_id}.scope"),
        ] {
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
                created.push(dir.clone());
            }
            dirs.push(dir.clone());
        }
        Self(dirs)
    }

    pub fn path(&self) -> &PathBuf {
        self.0.last().expect("the container's cgroup")
    }

    /// Moves process `pid` into the container's cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.path().join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.path().display()));
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        let mut created = CREATED_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
        // A killed program leaves its cgroup a moment after its parent reaped it.
        let leaf = self.path();
        for _ in 0..if created.contains(leaf) { 50 } else { 0 } {
            if std::fs::remove_dir(leaf).is_ok() {
                created.retain(|d| d != leaf);
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for dir in self.0.iter().rev().skip(1) {
            // Removed only when made here, and only once empty.
            if created.contains(dir) && std::fs::remove_dir(dir).is_ok() {
                created.retain(|d| d != dir);
            }
        }
    }
}

/// A fresh directory under the temporary directory, named after the test
/// process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gobpf-sched-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A plain HTTP GET on loopback; returns (status, body).
pub fn http_get(address: &str, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

/// The body of a `Transfer-Encoding: chunked` response (Prometheus answers so).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `promtool ARGS` with `stdin`: whether it succeeded, and what it said.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A real Prometheus (the Debian package's) with the configuration `config`,
/// its data in `dir`; killed when dropped.
pub struct Prometheus {
    child: Child,
    /// Where its web API listens: `127.0.0.1:PORT`.
    pub web: String,
}

impl Prometheus {
    /// Starts it and waits (at most 30 s) until it is ready.
    pub fn start(dir: &Path, config: &str) -> Self {
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let web = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus; `cargo xtask setup` installs it)");
        let prometheus = Self { child, web };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&prometheus.web).is_err()
            || http_get(&prometheus.web, "/-/ready", None).0 != 200
        {
            assert!(Instant::now() < deadline, "Prometheus did not start");
            thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `/api/v1/targets` answer.
    pub fn targets(&self) -> String {
        http_get(&self.web, "/api/v1/targets", None).1
    }

    /// Waits until a target was scraped (Prometheus takes up to 5 s to turn
    /// the configuration into a scrape target).
    pub fn wait_for_a_scrape(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.targets().contains("\"health\":\"up\"") {
            assert!(
                Instant::now() < deadline,
                "Prometheus never scraped the observer: {}",
                self.targets()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The HTTP status and the JSON answer of the instant query `expr`.
    pub fn query(&self, expr: &str) -> (u16, String) {
        http_get(
            &self.web,
            &format!("/api/v1/query?query={}", percent_encode(expr)),
            None,
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmux server of its own, so tests never touch a user's sessions.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(command: &str) -> Self {
        // Its own server per screen: tests run side by side.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let server = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmux = Self {
            socket: format!("gobpf-sched-test-{}-{server}", std::process::id()),
        };
        let status = tmux
            .command(&["new-session", "-d", "-x", "180", "-y", "52", command])
            .status()
            .expect("tmux (Debian package tmux; `cargo xtask setup` installs it)");
        assert!(status.success());
        tmux
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]).args(args);
        command
    }

    /// The visible screen and the lines scrolled off it.
    pub fn screen(&self) -> String {
        let output = self
            .command(&["capture-pane", "-p", "-S", "-"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn keys(&self, keys: &str) {
        assert!(
            self.command(&["send-keys", keys])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits (at most 30 s) until the screen shows `text`; returns the screen.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(Instant::now() < deadline, "never saw {text:?}:\n{screen}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).status();
    }
}

/// A `--record` file read back with the Trace proto of the `perfetto` PyPI
/// package (`tests/perfetto_summary.py`): its tracks, with what each holds.
pub fn perfetto_summary(file: &Path) -> Value {
    let python_path = std::env::var("GOBPF_SCHED_PERFETTO_PYTHONPATH").expect(
        "GOBPF_SCHED_PERFETTO_PYTHONPATH is not set: run the tests with `cargo xtask test`",
    );
    let parsed = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto_summary.py"))
        .arg(file)
        .env("PYTHONPATH", &python_path)
        .output()
        .expect("python3");
    assert!(
        parsed.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&parsed.stderr)
    );
    serde_json::from_slice(&parsed.stdout).unwrap()
}

/// Waits for the observer `child` to exit, at most `limit` (then kills it
/// and fails, saying it did not exit `after` what).
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
    after: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait observer") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gobpf-sched did not exit within {limit:?} {after}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}
