//! guest-os's region bookkeeping (`guests/os/src/regions.rs`, the VMAs behind mmap, munmap,
//! mprotect and brk), tested on the host: table tests for each operation, and a randomized
//! comparison against a naive page-by-page model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

#[path = "../../../guests/os/src/regions.rs"]
#[allow(dead_code)]
mod regions;

use regions::{MAX_REGIONS, Region, RegionError, Regions};

const R: u64 = 1;
const RW: u64 = 3;
const RX: u64 = 5;
const PAGE: u64 = 0x1000;

fn region(start: u64, end: u64, prot: u64) -> Region {
    Region { start, end, prot }
}

#[test]
fn insert_keeps_order_and_merges_equal_neighbours() {
    let mut r = Regions::new();
    r.insert(0x5000, 0x6000, RW).unwrap();
    r.insert(0x1000, 0x3000, RW).unwrap();
    assert_eq!(
        r.as_slice(),
        [region(0x1000, 0x3000, RW), region(0x5000, 0x6000, RW)]
    );
    r.insert(0x3000, 0x5000, RW).unwrap();
    assert_eq!(r.as_slice(), [region(0x1000, 0x6000, RW)]);
    r.insert(0x6000, 0x7000, RX).unwrap();
    assert_eq!(
        r.as_slice(),
        [region(0x1000, 0x6000, RW), region(0x6000, 0x7000, RX)]
    );
}

#[test]
fn insert_refuses_overlap_and_empty_ranges() {
    let mut r = Regions::new();
    r.insert(0x1000, 0x3000, RW).unwrap();
    assert_eq!(r.insert(0x2000, 0x4000, RW), Err(RegionError::Invalid));
    assert_eq!(r.insert(0x0, 0x1001, RW), Err(RegionError::Invalid));
    assert_eq!(r.insert(0x8000, 0x8000, RW), Err(RegionError::Invalid));
    assert_eq!(r.insert(0x9000, 0x8000, RW), Err(RegionError::Invalid));
    assert_eq!(r.as_slice(), [region(0x1000, 0x3000, RW)]);
}

#[test]
fn find_uses_half_open_ranges() {
    let mut r = Regions::new();
    r.insert(0x1000, 0x3000, R).unwrap();
    assert_eq!(r.find(0x0fff), None);
    assert_eq!(r.find(0x1000), Some(region(0x1000, 0x3000, R)));
    assert_eq!(r.find(0x2fff), Some(region(0x1000, 0x3000, R)));
    assert_eq!(r.find(0x3000), None);
}

#[test]
fn remove_trims_splits_and_deletes() {
    let mut r = Regions::new();
    r.insert(0x1000, 0x9000, RW).unwrap();
    r.remove(0x3000, 0x4000).unwrap(); // a hole in the middle
    assert_eq!(
        r.as_slice(),
        [region(0x1000, 0x3000, RW), region(0x4000, 0x9000, RW)]
    );
    r.remove(0x0, 0x2000).unwrap(); // the head of the first
    r.remove(0x8000, 0xa000).unwrap(); // the tail of the second
    assert_eq!(
        r.as_slice(),
        [region(0x2000, 0x3000, RW), region(0x4000, 0x8000, RW)]
    );
    r.remove(0x0, 0x10000).unwrap(); // everything
    assert_eq!(r.as_slice(), []);
    r.remove(0x0, 0x10000).unwrap(); // nothing there: not an error (munmap semantics)
    assert_eq!(r.remove(0x5000, 0x5000), Err(RegionError::Invalid));
}

#[test]
fn protect_needs_full_coverage_and_merges_back() {
    let mut r = Regions::new();
    r.insert(0x1000, 0x3000, RW).unwrap();
    r.insert(0x4000, 0x6000, RW).unwrap();
    assert_eq!(r.protect(0x2000, 0x5000, R), Err(RegionError::Unmapped));
    assert_eq!(r.protect(0x0, 0x2000, R), Err(RegionError::Unmapped));
    assert_eq!(r.protect(0x5000, 0x7000, R), Err(RegionError::Unmapped));
    assert_eq!(
        r.as_slice(),
        [region(0x1000, 0x3000, RW), region(0x4000, 0x6000, RW)]
    );

    r.protect(0x1000, 0x2000, R).unwrap();
    assert_eq!(
        r.as_slice(),
        [
            region(0x1000, 0x2000, R),
            region(0x2000, 0x3000, RW),
            region(0x4000, 0x6000, RW)
        ]
    );
    r.protect(0x1000, 0x2000, RW).unwrap();
    assert_eq!(
        r.as_slice(),
        [region(0x1000, 0x3000, RW), region(0x4000, 0x6000, RW)]
    );
}

#[test]
fn first_fit_finds_the_lowest_gap_below_the_limit() {
    let mut r = Regions::new();
    r.insert(0x10000, 0x12000, RW).unwrap();
    r.insert(0x13000, 0x14000, RW).unwrap();
    assert_eq!(r.first_fit(0x10000, 0x1000, 0x100000), Some(0x12000));
    assert_eq!(r.first_fit(0x10000, 0x2000, 0x100000), Some(0x14000));
    assert_eq!(r.first_fit(0x8000, 0x8000, 0x100000), Some(0x8000));
    assert_eq!(r.first_fit(0x8000, 0x8001, 0x100000), Some(0x14000));
    assert_eq!(r.first_fit(0x10000, 0x2000, 0x15000), None);
    assert_eq!(r.first_fit(u64::MAX - 0x1000, 0x2000, u64::MAX), None);
}

#[test]
fn a_full_table_refuses_only_changes_that_need_a_slot() {
    let mut r = Regions::new();
    // MAX_REGIONS regions of three pages, one page apart.
    for i in 0..MAX_REGIONS as u64 {
        r.insert(i * 4 * PAGE, i * 4 * PAGE + 3 * PAGE, RW).unwrap();
    }
    let far = 8 * MAX_REGIONS as u64 * PAGE;
    assert_eq!(r.insert(far, far + PAGE, RW), Err(RegionError::Full));
    assert_eq!(
        r.protect(0, PAGE, R),
        Err(RegionError::Full),
        "splits [0, 3)"
    );
    assert_eq!(
        r.remove(PAGE, 2 * PAGE),
        Err(RegionError::Full),
        "a hole splits [0, 3)"
    );
    assert_eq!(
        r.as_slice()[0],
        region(0, 3 * PAGE, RW),
        "a refused change changes nothing"
    );
    // Trimming and whole-region changes need no slot.
    assert_eq!(r.remove(0, PAGE), Ok(()));
    assert_eq!(r.protect(4 * PAGE, 7 * PAGE, R), Ok(()));
    assert_eq!(r.remove(8 * PAGE, 11 * PAGE), Ok(()));
    assert_eq!(
        r.as_slice()[..2],
        [region(PAGE, 3 * PAGE, RW), region(4 * PAGE, 7 * PAGE, R)]
    );
    assert_eq!(
        r.insert(far, far + PAGE, RW),
        Ok(()),
        "a slot is free again"
    );
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
fn random_operations_agree_with_a_page_by_page_model() {
    const PAGES: usize = 48;
    let prots = [R, RW, RX];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..200 {
        let mut regions = Regions::new();
        let mut model = [0u64; PAGES]; // 0: unmapped
        for _ in 0..60 {
            let a = rng.below(PAGES as u64);
            let b = rng.below(PAGES as u64 + 1);
            let (start, end) = (a.min(b), a.max(b));
            let prot = prots[rng.below(3) as usize];
            let pages = start as usize..end as usize;
            match rng.below(3) {
                0 => {
                    let free = end > start && model[pages.clone()].iter().all(|&p| p == 0);
                    let got = regions.insert(start * PAGE, end * PAGE, prot);
                    assert_eq!(got.is_ok(), free, "insert {start}..{end}: {got:?}");
                    if free {
                        model[pages].fill(prot);
                    }
                }
                1 => {
                    let got = regions.remove(start * PAGE, end * PAGE);
                    assert_eq!(got.is_ok(), end > start, "remove {start}..{end}: {got:?}");
                    if end > start {
                        model[pages].fill(0);
                    }
                }
                _ => {
                    let covered = end > start && model[pages.clone()].iter().all(|&p| p != 0);
                    let got = regions.protect(start * PAGE, end * PAGE, prot);
                    assert_eq!(got.is_ok(), covered, "protect {start}..{end}: {got:?}");
                    if covered {
                        model[pages].fill(prot);
                    }
                }
            }
            // Same content, sorted, disjoint, and merged.
            let mut flat = [0u64; PAGES];
            for r in regions.as_slice() {
                for page in r.start / PAGE..r.end / PAGE {
                    assert_eq!(
                        flat[page as usize],
                        0,
                        "overlapping regions {:?}",
                        regions.as_slice()
                    );
                    flat[page as usize] = r.prot;
                }
            }
            assert_eq!(flat, model, "regions {:?}", regions.as_slice());
            for pair in regions.as_slice().windows(2) {
                assert!(
                    pair[0].end <= pair[1].start,
                    "unsorted {:?}",
                    regions.as_slice()
                );
                assert!(
                    !(pair[0].end == pair[1].start && pair[0].prot == pair[1].prot),
                    "unmerged neighbours {:?}",
                    regions.as_slice()
                );
            }
        }
    }
}
