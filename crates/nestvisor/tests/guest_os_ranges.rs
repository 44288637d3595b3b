//! guest-os's usable-memory set (`guests/os/src/mm/ranges.rs`, what the frame allocator hands
//! out), tested on the host: firmware maps with overlapping, unsorted and unaligned entries give
//! each page at most once, and a randomized comparison against a page-by-page model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

#[path = "../../../guests/os/src/mm/ranges.rs"]
#[allow(dead_code)]
mod ranges;

use ranges::{MAX_RANGES, PageRanges};

const PAGE: u64 = 4096;

#[test]
fn overlapping_unsorted_and_unaligned_entries_are_normalised() {
    let mut r = PageRanges::new();
    assert!(r.add(0x10_0000, 0x20_0000));
    assert!(r.add(0x1000, 0x9_f000));
    assert!(r.add(0x18_0000, 0x30_0000)); // overlaps the first
    assert!(r.add(0x30_0000, 0x31_0000)); // touches it
    assert!(r.add(0x40_0001, 0x40_2fff)); // unaligned: only the page at 0x401000 is whole
    assert!(r.add(0x50_0000, 0x50_0fff)); // no whole page
    assert_eq!(
        r.as_slice(),
        [
            (0x1000, 0x9_f000),
            (0x10_0000, 0x31_0000),
            (0x40_1000, 0x40_2000)
        ]
    );
    assert!(r.add(0, 0x40_1000)); // swallows everything below
    assert_eq!(r.as_slice(), [(0, 0x40_2000)]);
}

#[test]
fn remove_widens_to_pages_and_splits() {
    let mut r = PageRanges::new();
    r.add(0, 0x10_0000);
    r.remove(0x2001, 0x3001); // pages 0x2000 and 0x3000
    assert_eq!(r.as_slice(), [(0, 0x2000), (0x4000, 0x10_0000)]);
    r.remove(0, 0x1000);
    r.remove(0xf_f000, 0x20_0000);
    assert_eq!(r.as_slice(), [(0x1000, 0x2000), (0x4000, 0xf_f000)]);
    r.remove(0, u64::MAX);
    assert_eq!(r.as_slice(), []);
}

#[test]
fn a_full_set_never_gives_a_page_twice() {
    let mut r = PageRanges::new();
    for i in 0..MAX_RANGES as u64 {
        assert!(r.add(i * 4 * PAGE, i * 4 * PAGE + 3 * PAGE));
    }
    let far = 8 * MAX_RANGES as u64 * PAGE;
    assert!(!r.add(far, far + PAGE), "no slot for a separate range");
    assert!(
        r.add(3 * PAGE, 4 * PAGE),
        "joining neighbours needs no slot"
    );
    assert_eq!(r.as_slice()[0], (0, 7 * PAGE));
    // A split with no free slot keeps the lower part only.
    assert!(r.add(far, far + PAGE));
    r.remove(PAGE, 2 * PAGE);
    assert_eq!(r.as_slice()[0], (0, PAGE));
    assert_eq!(r.as_slice()[1], (8 * PAGE, 11 * PAGE));
}

/// xorshift64: deterministic operations for the model comparison.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_maps_agree_with_a_page_by_page_model() {
    const PAGES: u64 = 64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let mut r = PageRanges::new();
        let mut model = [false; PAGES as usize];
        for _ in 0..40 {
            let a = rng.below(PAGES * PAGE);
            let b = rng.below(PAGES * PAGE + 1);
            let (start, end) = (a.min(b), a.max(b));
            if rng.below(3) == 0 {
                r.remove(start, end);
                if start < end {
                    for page in start / PAGE..end.div_ceil(PAGE) {
                        model[page as usize] = false;
                    }
                }
            } else {
                assert!(r.add(start, end));
                for page in start.div_ceil(PAGE)..end / PAGE {
                    model[page as usize] = true;
                }
            }
            let mut flat = [false; PAGES as usize];
            for &(s, e) in r.as_slice() {
                assert!(
                    s % PAGE == 0 && e % PAGE == 0 && s < e,
                    "{:x?}",
                    r.as_slice()
                );
                for page in s / PAGE..e / PAGE {
                    assert!(
                        !flat[page as usize],
                        "page {page} twice: {:x?}",
                        r.as_slice()
                    );
                    flat[page as usize] = true;
                }
            }
            assert_eq!(flat, model, "{:x?}", r.as_slice());
            for pair in r.as_slice().windows(2) {
                assert!(
                    pair[0].1 < pair[1].0,
                    "unsorted or unmerged: {:x?}",
                    r.as_slice()
                );
            }
        }
    }
}
