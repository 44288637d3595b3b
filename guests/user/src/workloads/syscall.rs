//! `syscall`: a tight loop of cheap system calls (getpid and brk queries, alternately). The
//! checksum covers every return value, relative to the first ones (so it does not depend on
//! which pid the workload got).

use super::report;
use crate::hash::Fnv;
use crate::params::{Param, parse};
use crate::sys;

pub fn main(args: &str) {
    let [calls] = parse("syscall", args, [Param::new("calls", 200_000, 1..=1 << 40)]);
    let pid = sys::getpid();
    let brk = sys::brk(0);
    let mut sum = Fnv::new();
    for i in 0..calls {
        let r = if i % 2 == 0 {
            sys::getpid().wrapping_sub(pid)
        } else {
            sys::brk(0).wrapping_sub(brk)
        };
        sum.word(i ^ r);
    }
    report("syscall", sum.0);
}
