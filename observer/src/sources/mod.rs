//! How facts are collected from the target: the kernel programs, loaded once
//! for every watched process (`kernel`: a slot per process), kernel probes
//! (`probes`: which ones the watched facets need; attach them; the transition probes
//! of a program on one uprobe_multi link: `uprobe_multi`), the drain of their maps and
//! ring buffer (`drain`), when the transition probes are attached under the
//! overhead budget (`windows`, which `duty_cycle` decides, with the cost of a
//! hit measured at start by `calibration`), and the runtime's own bookkeeping read from the target's
//! memory (`runtime_memory`; every goroutine: `goroutines`), and CPU samples of
//! its threads (`sampler`); where goroutines park, when a block profile is
//! asked for (`block_stacks`).

pub mod block_stacks;
pub mod calibration;
pub mod drain;
pub mod duty_cycle;
pub mod goroutines;
pub mod kernel;
pub mod probes;
pub mod runtime_memory;
pub mod sampler;
pub mod uprobe_multi;
pub mod windows;
