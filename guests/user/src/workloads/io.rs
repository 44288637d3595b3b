//! `io`: port-I/O-heavy console output. Writes `lines` lines of `width` generated characters,
//! one write call per line; the kernel sends every byte to the UART with a status-register poll
//! and a data-register write.

use super::report;
use crate::hash::{Fnv, Rng};
use crate::params::{Param, parse};
use crate::sys;

pub fn main(args: &str) {
    let [lines, width] = parse(
        "io",
        args,
        [
            Param::new("lines", 500, 1..=1 << 32),
            Param::new("width", 72, 1..=200),
        ],
    );
    let mut rng = Rng::new(0x10);
    let mut sum = Fnv::new();
    let mut line = [0u8; 216];
    for i in 0..lines {
        let prefix = b"io ";
        line[..3].copy_from_slice(prefix);
        let mut n = i;
        for d in (3..9).rev() {
            line[d] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        line[9] = b' ';
        let end = 10 + width as usize;
        for b in &mut line[10..end] {
            *b = b'a' + rng.below(26) as u8;
        }
        line[end] = b'\n';
        sys::write(&line[..=end]);
        sum.bytes(&line[..=end]);
    }
    report("io", sum.0);
}
