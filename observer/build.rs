//! Builds the kernel programs (`observer-ebpf/`, nightly, bpfel-unknown-none) so the
//! `gobpf-sched` binary can embed them. Needs bpf-linker: `cargo xtask setup`.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [Package {
            name: "gobpf-sched-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf"),
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
