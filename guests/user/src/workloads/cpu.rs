//! `cpu`: pure computation, no system calls in the loop: xorshift, multiply, divide, rotate,
//! branches and a small table in memory.

use super::report;
use crate::params::{Param, parse};

pub fn main(args: &str) {
    let [iters] = parse("cpu", args, [Param::new("iters", 1_000_000, 1..=1 << 40)]);
    let mut table = [0u32; 256];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut acc: u64 = 0;
    for i in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = (x >> 56) as usize;
        table[slot] = table[slot].wrapping_add(x as u32) ^ (i as u32);
        let q = x / (i | 1);
        let r = x % ((i & 0xFFFF) + 3);
        acc = acc.rotate_left(5) ^ q.wrapping_mul(0x0100_0000_01B3) ^ r;
        if acc & 1 == 0 {
            acc = acc.wrapping_add(u64::from(table[(acc >> 3) as usize & 0xFF]));
        }
    }
    for (i, t) in table.iter().enumerate() {
        acc = acc.rotate_left(3) ^ u64::from(*t) ^ i as u64;
    }
    report("cpu", acc);
}
