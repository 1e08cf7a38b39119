//! Where in a Go function to put its uprobe.
//!
//! A Go function that can grow its stack begins with the stack check
//! `cmp 0x10(%r14),%rsp` (or `lea -N(%rsp),%r12; cmp 0x10(%r14),%r12` for big
//! frames) and `jbe <morestack>`. Two reasons to probe the `jbe`, not the entry:
//! - cost: the kernel emulates a conditional jump (~1 µs a hit here) but must
//!   single-step a `cmp` (~11 µs; measured on a 2-core VM with kernel 6.18; the
//!   kernel's `arch/x86/kernel/uprobes.c` emulates branches, calls and `push`);
//! - exactness: when the stack must grow, or a preemption was requested (sysmon
//!   sets `stackguard0 = stackPreempt`), the jump is taken and the function starts
//!   over after `morestack`, so an entry probe counts that call twice. At the `jbe`
//!   the flags tell which case it is (CF or ZF set: the jump will be taken) and
//!   the kernel program skips it.
//!
//! Arguments are still in their registers there: the check writes only the flags
//! (and R12, a scratch register). Functions without the check (`//go:nosplit`,
//! e.g. `entersyscall`) never start over and are probed at their entry.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

/// Bytes of a function decoded to find its stack check.
pub const PROLOGUE_BYTES: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Placement {
    /// At the `jbe` of the stack check; the program must skip hits whose flags
    /// say the jump is taken.
    StackCheckJump,
    /// At the first instruction (no stack check found).
    Entry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSite {
    /// Bytes from the function's first instruction.
    pub offset: u64,
    pub placement: Placement,
}

/// Finds the probe site of the function whose first bytes are `code`.
pub fn probe_site(code: &[u8]) -> ProbeSite {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut saw_stack_check = false;
    // The check is among the first three instructions in every supported version.
    for _ in 0..4 {
        if !decoder.can_decode() {
            break;
        }
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        if saw_stack_check {
            if instruction.mnemonic() == Mnemonic::Jbe {
                return ProbeSite {
                    offset: instruction.ip(),
                    placement: Placement::StackCheckJump,
                };
            }
            break;
        }
        // cmp <reg>, [r14 + 0x10]: compares with g.stackguard0.
        saw_stack_check = instruction.mnemonic() == Mnemonic::Cmp
            && instruction.op_count() == 2
            && instruction.op1_kind() == OpKind::Memory
            && instruction.memory_base() == Register::R14
            && instruction.memory_displacement64() == 0x10;
    }
    ProbeSite {
        offset: 0,
        placement: Placement::Entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Prologues as the Go compiler emits them (bytes from real Go 1.19 and 1.25
    // binaries; the integration tests check real binaries of every toolchain).
    #[test]
    fn finds_the_jump_of_the_stack_check() {
        let go125_gopark = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xdc, 0, 0, 0, 0x55];
        assert_eq!(
            probe_site(&go125_gopark),
            ProbeSite {
                offset: 4,
                placement: Placement::StackCheckJump
            }
        );
        // lea -0x88(%rsp),%r12; cmp 0x10(%r14),%r12; jbe
        let big_frame = [
            0x4c, 0x8d, 0xa4, 0x24, 0x78, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86,
            0x10, 0x02, 0, 0,
        ];
        assert_eq!(probe_site(&big_frame).offset, 12);
    }

    #[test]
    fn nosplit_functions_are_probed_at_entry() {
        let go119_entersyscall = [0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x6c, 0x24, 0x10];
        assert_eq!(probe_site(&go119_entersyscall).placement, Placement::Entry);
        let go125_exitsyscall = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x60];
        assert_eq!(probe_site(&go125_exitsyscall).offset, 0);
        assert_eq!(probe_site(&[]).placement, Placement::Entry);
    }
}
