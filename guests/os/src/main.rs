//! guest-os: a small multitasking kernel for x86-64 long mode, booted by multiboot1 through
//! [`rt`]. It sets up its own GDT and TSS ([`gdt`]), IDT ([`trap`]), 4-level paging over a frame
//! allocator fed by the multiboot memory map ([`mm`]), SYSCALL/SYSRET ([`syscall`]) and the LAPIC
//! timer ([`apic`]), then starts `init` (pid 1), a ring-3 program that runs the workload named on
//! the command line. Processes ([`proc`]) have their own address spaces with demand-zero and
//! copy-on-write memory ([`vm`]) and run the built-in programs ([`programs`], [`elf`]).
//!
//! When init exits, the kernel leaves through the debug-exit port with init's status: 0 when
//! the workload succeeded, 1 for a bad command line, [`rt::EXIT_PANIC`] for a kernel error.
//! See `docs/guest-os.md`.

#![no_std]
#![no_main]

mod apic;
mod arch;
mod cmdline;
mod elf;
mod errno;
mod gdt;
mod global;
mod mm;
mod proc;
mod programs;
mod regions;
mod syscall;
mod trap;
mod vm;

use rt::{BootInfo, println};

/// Exit status for a command line the kernel cannot use.
const EXIT_USAGE: u8 = 1;

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    gdt::init();
    trap::init();
    let top = mm::frame::init(boot);
    mm::paging::init(boot, top);
    proc::init();
    syscall::init();
    apic::init();

    let args = cmdline::workload_args(boot.cmdline(), programs::WORKLOADS);
    if boot.cmdline_truncated() || args.len() > proc::MAX_ARGS {
        println!("guest-os: command line too long");
        rt::exit(EXIT_USAGE);
    }
    println!("guest-os: init {args}");
    proc::start_init("init", args.as_bytes())
}
