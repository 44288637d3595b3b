//! Shared pieces of the bare-metal CPU test programs and benchmark kernels (`src/bin/*`): the
//! descriptor tables ([`desc`]: GDT with ring-0 and ring-3 segments, a 64-bit TSS with RSP0 and
//! IST stacks, an IDT), exception capture with resumption ([`trap`]), 4-level page tables built
//! from a pool of frames in the image ([`paging`]), result reporting with a checksum
//! ([`report`]) and the command line ([`args`]).
//!
//! Every program boots through [`rt`] (multiboot1 into long mode), prints its results over the
//! UART and leaves through the debug-exit port with 0 when every check passed. The output
//! depends only on the architecture, never on timing, so the same image prints the same lines
//! under `qemu-system-x86_64 -accel tcg -kernel` and under `nestvisor run --bare`
//! (`docs/testing.md`).

#![no_std]

pub mod arch;
pub mod args;
pub mod desc;
pub mod paging;
pub mod report;
pub mod trap;
pub mod vmx;

/// Sets up what every program needs: the GDT and TSS, the IDT, the paging helpers.
pub fn init() {
    desc::init();
    paging::init();
}
