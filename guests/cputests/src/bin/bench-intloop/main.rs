//! bench-intloop: a tight integer loop for comparing the speed of CPU models (issue 3 item 7):
//! `iters=N` rounds of a dependent chain of rotates, XORs, multiplies, adds and a
//! data-dependent branch, on registers only. Prints the iteration count and a checksum of the
//! final state, so a wrong result is seen as well as a slow one. No memory traffic, no system
//! instructions, no exceptions: it measures the interpreter's core.

#![no_std]
#![no_main]

use core::hint::black_box;
use cputests::out;
use cputests::report::{EXIT_USAGE, Report};
use rt::BootInfo;

const DEFAULT_ITERS: u64 = 1_000_000;

/// The loop: a xorshift-multiply mix with a branch on its low bit.
fn run(iters: u64) -> (u64, u64) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut y: u64 = 1;
    let mut taken = 0u64;
    for i in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        y = y.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(x ^ i);
        if y & 1 != 0 {
            taken += 1;
            y = y.rotate_left(9);
        }
    }
    (x ^ y.rotate_left(32), taken)
}

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut report = Report::new("bench-intloop");
    let Some(iters) = cputests::args::number(boot.cmdline(), "iters", DEFAULT_ITERS) else {
        out!(report, "usage: iters=N");
        rt::exit(EXIT_USAGE);
    };
    let (checksum, taken) = run(black_box(iters));
    out!(
        report,
        "bench-intloop: iters={iters} branches-taken={taken} checksum={checksum:016x}"
    );
    // Half the branches, give or take: a mix that does not degenerate.
    report.check(
        format_args!("branch mix"),
        iters < 1000 || (taken > iters / 4 && taken < iters * 3 / 4),
    );
    report.finish()
}
