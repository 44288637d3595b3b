//! `memtouch`: first touch of `mib` MiB of demand-zero memory (one write per 64-byte line), then
//! `passes` read-modify-write passes over the same lines: first-touch cost versus steady state.

use super::{map_words, report};
use crate::params::{Param, parse};
use crate::sys;

pub fn main(args: &str) {
    let [mib, passes] = parse(
        "memtouch",
        args,
        [
            Param::new("mib", 32, 1..=1 << 16),
            Param::new("passes", 4, 0..=1 << 20),
        ],
    );
    let len = mib << 20;
    let words = map_words("memtouch", len);
    let stride = 8; // one u64 per 64-byte line
    let mut line = 0u64;
    for w in words.iter_mut().step_by(stride) {
        *w = line.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
        line += 1;
    }
    let mut acc = line;
    for pass in 0..passes {
        for w in words.iter_mut().step_by(stride) {
            let v = w.rotate_left(7) ^ pass;
            *w = v;
            acc = acc.wrapping_add(v).rotate_left(1);
        }
    }
    let addr = words.as_ptr() as u64;
    // SAFETY: `words` is not used after this.
    if let Err(e) = unsafe { sys::munmap(addr, len) } {
        super::fail("memtouch", "munmap", e);
    }
    report("memtouch", acc);
}
