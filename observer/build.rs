//! Builds the kernel programs (`observer-ebpf/`, nightly, bpfel-unknown-none) so the
//! `gobpf-sched` binary can embed them (needs bpf-linker: `cargo xtask setup`), and
//! generates pprof's messages from `proto/profile.proto` (`outputs::pprof`).
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // Pure-Rust parser: no protoc needed. Into OUT_DIR, included by outputs/pprof.rs.
    println!("cargo:rerun-if-changed=proto/profile.proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/profile.proto")
        .cargo_out_dir("pprof_proto")
        .run()?;
    aya_build::build_ebpf(
        [Package {
            name: "gobpf-sched-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../observer-ebpf"),
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
