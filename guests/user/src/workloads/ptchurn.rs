//! `ptchurn`: page-table churn. Each round maps `pages` pages, touches them, makes the first
//! half read-only and reads everything, makes it writable again and writes everything, punches
//! a one-page hole in the middle, and unmaps the rest. The next round gets the same addresses
//! back and checks that they read as zero, which a missed TLB invalidation would break.

use super::{fail, map_words, report};
use crate::params::{Param, parse};
use crate::sys::{self, PROT_READ, PROT_WRITE};
use crate::{EXIT_FAILED, exit, println};

const PAGE: u64 = 4096;
const WORDS_PER_PAGE: usize = (PAGE / 8) as usize;

pub fn main(args: &str) {
    let [rounds, pages] = parse(
        "ptchurn",
        args,
        [
            Param::new("rounds", 1024, 1..=1 << 32),
            Param::new("pages", 32, 2..=1 << 16),
        ],
    );
    let len = pages * PAGE;
    let mut acc = 0u64;
    for round in 0..rounds {
        let words = map_words("ptchurn", len);
        let base = words.as_ptr() as u64;
        let at = (round as usize * 8) % WORDS_PER_PAGE;
        // Fresh memory reads as zero: a stale translation left by the previous round's munmap
        // (a missing TLB invalidation) would show the old page's data instead.
        let previous_at = (round.wrapping_sub(1) as usize * 8) % WORDS_PER_PAGE;
        for (p, page) in words.chunks_exact(WORDS_PER_PAGE).enumerate() {
            let seen = page[at] | page[previous_at];
            if seen != 0 {
                println!("ptchurn: round {round}, page {p} of fresh memory reads {seen:#x}");
                exit(EXIT_FAILED);
            }
        }
        for (p, page) in words.chunks_exact_mut(WORDS_PER_PAGE).enumerate() {
            page[at] = round ^ ((p as u64) << 20);
        }
        let half = (pages / 2) * PAGE;
        // SAFETY: nothing writes the first half while it is read-only.
        if let Err(e) = unsafe { sys::mprotect(base, half, PROT_READ) } {
            fail("ptchurn", "mprotect", e);
        }
        for page in words.chunks_exact(WORDS_PER_PAGE) {
            acc = acc.rotate_left(3) ^ page[at];
        }
        // SAFETY: the range is ours again for writing.
        if let Err(e) = unsafe { sys::mprotect(base, half, PROT_READ | PROT_WRITE) } {
            fail("ptchurn", "mprotect", e);
        }
        for page in words.chunks_exact_mut(WORDS_PER_PAGE) {
            page[at] = page[at].wrapping_mul(3).wrapping_add(1);
            acc = acc.wrapping_add(page[at]);
        }
        // SAFETY: `words` is not used after the unmaps.
        unsafe {
            if let Err(e) = sys::munmap(base + half, PAGE) {
                fail("ptchurn", "munmap", e);
            }
            if let Err(e) = sys::munmap(base, len) {
                fail("ptchurn", "munmap", e);
            }
        }
    }
    report("ptchurn", acc);
}
