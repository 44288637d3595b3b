//! guest-hv's frame allocator (`guests/hv/src/frames.rs`), tested on the host: memory-map
//! regions give their whole frames and exclusions take every frame they touch; blocks come
//! from the top, aligned and never overlapping anything in use; single frames come from the
//! bottom, are reused once freed, and a frame freed twice or never lent is ignored; a
//! randomized run against a frame-by-frame model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

#[path = "../../../guests/hv/src/frames.rs"]
#[allow(dead_code)]
mod frames;

use std::collections::BTreeSet;

use frames::{Bitmaps, FRAME_SIZE, Frames, LIMIT};
use x86::{Hfn, Hpa};

const MIB: u64 = 1 << 20;

/// An allocator over bitmaps of its own.
fn frames() -> Frames {
    Frames::over(Box::leak(Box::new(Bitmaps::new())))
}

fn range(start: u64, end: u64) -> std::ops::Range<Hpa> {
    Hpa::new(start)..Hpa::new(end)
}

/// Every frame the allocator hands out until it has none.
fn drain(f: &mut Frames) -> Vec<u64> {
    std::iter::from_fn(|| f.alloc()).map(Hfn::raw).collect()
}

#[test]
fn regions_give_whole_frames_and_exclusions_take_every_frame_they_touch() {
    let mut f = frames();
    assert_eq!(f.alloc(), None, "nothing is free at first");
    f.add(range(0x1800, 0x5800)); // whole frames 2..5
    assert_eq!(f.free_bytes(), 3 * FRAME_SIZE);
    f.remove(range(0x3fff, 0x4001)); // touches frames 3 and 4
    assert_eq!(drain(&mut f), [2]);
    // Above the first GiB nothing is ever free; a region across it is cut.
    let mut f = frames();
    f.add(range(LIMIT - 2 * FRAME_SIZE, LIMIT + 16 * MIB));
    f.add(range(LIMIT + MIB, LIMIT + 2 * MIB));
    assert_eq!(
        drain(&mut f),
        [LIMIT / FRAME_SIZE - 2, LIMIT / FRAME_SIZE - 1]
    );
    // Overlapping regions count each frame once.
    let mut f = frames();
    f.add(range(0, 8 * FRAME_SIZE));
    f.add(range(4 * FRAME_SIZE, 12 * FRAME_SIZE));
    assert_eq!(f.free_bytes(), 12 * FRAME_SIZE);
    f.remove(range(0, 100 * FRAME_SIZE));
    assert_eq!(f.free_bytes(), 0);
}

#[test]
fn blocks_come_from_the_top_aligned_and_clear_of_what_is_in_use() {
    let mut f = frames();
    // A board of 256 MiB: RAM below 640 KiB and from 1 MiB; the first MiB, an image at
    // 1..6 MiB and a module at 6..6.5 MiB in use.
    f.add(range(0, 0xa_0000));
    f.add(range(MIB, 256 * MIB));
    f.remove(range(0, MIB));
    f.remove(range(MIB, 6 * MIB));
    f.remove(range(6 * MIB, 6 * MIB + 0x8_0123));
    let free = f.free_bytes();
    assert_eq!(free, 256 * MIB - 6 * MIB - 0x8_1000);
    let ram = f.take_block(64 * MIB, 2 * MIB).unwrap();
    assert_eq!((ram.base(), ram.size()), (Hpa::new(192 * MIB), 64 * MIB));
    // The next block lies below it; an unaligned size takes whole frames.
    let heap = f.take_block(10 * MIB + 1, FRAME_SIZE).unwrap();
    assert_eq!(heap.base(), Hpa::new(192 * MIB - 10 * MIB - FRAME_SIZE));
    assert_eq!(heap.size(), 10 * MIB + FRAME_SIZE);
    assert_eq!(f.free_bytes(), free - 64 * MIB - heap.size());
    // Too large, a size of 0 and a bad alignment give nothing.
    assert!(f.take_block(250 * MIB, FRAME_SIZE).is_none());
    assert!(f.take_block(0, FRAME_SIZE).is_none());
    assert!(f.take_block(MIB, 3 * FRAME_SIZE).is_none());
    assert!(f.take_block(MIB, 1).is_none());
    // Single frames start right after the module, and none lies in a block.
    let all = drain(&mut f);
    assert_eq!(all.first(), Some(&((6 * MIB + 0x8_1000) / FRAME_SIZE)));
    let block_frames = (heap.base().raw() / FRAME_SIZE)..(256 * MIB / FRAME_SIZE);
    assert!(all.iter().all(|n| !block_frames.contains(n)));
    assert_eq!(f.free_bytes(), 0);
}

#[test]
fn a_block_needs_an_aligned_free_run() {
    let mut f = frames();
    // 4 MiB free, starting 4 KiB past a 2-MiB line: no aligned 4-MiB block fits, one aligned
    // 2-MiB block does.
    f.add(range(2 * MIB + FRAME_SIZE, 6 * MIB + FRAME_SIZE));
    assert!(f.take_block(4 * MIB, 2 * MIB).is_none());
    let b = f.take_block(2 * MIB, 2 * MIB).unwrap();
    assert_eq!(b.base(), Hpa::new(4 * MIB));
    assert!(f.take_block(2 * MIB, 2 * MIB).is_none());
    // A frame in use in the middle of the rest splits it: 1 MiB no longer fits.
    f.remove(range(3 * MIB, 3 * MIB + 1));
    assert!(f.take_block(MIB, FRAME_SIZE).is_none());
    let b = f.take_block(MIB - FRAME_SIZE, FRAME_SIZE).unwrap();
    assert_eq!(b.base(), Hpa::new(3 * MIB + FRAME_SIZE));
    assert_eq!(b.size(), MIB - FRAME_SIZE);
}

#[test]
fn freed_frames_are_reused_and_bad_frees_are_ignored() {
    let mut f = frames();
    f.add(range(MIB, MIB + 8 * FRAME_SIZE));
    let first: Vec<Hfn> = (0..8).map(|_| f.alloc().unwrap()).collect();
    assert_eq!(f.alloc(), None);
    assert!(f.free(first[5]));
    assert!(f.free(first[2]));
    assert!(
        !f.free(first[2]),
        "a second free of the same frame is ignored"
    );
    // The lowest freed frame comes back first.
    assert_eq!(f.alloc(), Some(first[2]));
    assert_eq!(f.alloc(), Some(first[5]));
    assert_eq!(f.alloc(), None);
    // Frames never lent (in use as a block, the image, outside memory) cannot be freed.
    let mut g = frames();
    g.add(range(0, 4 * MIB));
    let block = g.take_block(MIB, FRAME_SIZE).unwrap();
    assert!(!g.free(block.base().frame()));
    assert!(!g.free(Hfn::new(LIMIT / FRAME_SIZE)));
    assert!(!g.free(Hfn::new(u64::MAX)));
    assert_eq!(g.free_bytes(), 3 * MIB);
}

#[test]
fn the_global_allocator_is_taken_once() {
    assert!(Frames::take().is_some());
    assert!(Frames::take().is_none());
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
fn random_operations_agree_with_a_frame_by_frame_model() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20 {
        let mut f = frames();
        // Model: the set of free frames, and the frames lent.
        let mut free = BTreeSet::new();
        let mut lent = BTreeSet::new();
        // Regions and exclusions within the first 64 MiB.
        let span = 64 * MIB / FRAME_SIZE;
        for _ in 0..8 {
            let (a, b) = (rng.below(span * FRAME_SIZE), rng.below(span * FRAME_SIZE));
            let (start, end) = (a.min(b), a.max(b));
            if rng.below(3) == 0 {
                f.remove(range(start, end));
                for n in start / FRAME_SIZE..end.div_ceil(FRAME_SIZE) {
                    free.remove(&n);
                }
            } else {
                f.add(range(start, end));
                free.extend(start.div_ceil(FRAME_SIZE)..end / FRAME_SIZE);
            }
            assert_eq!(f.free_bytes(), free.len() as u64 * FRAME_SIZE);
        }
        for _ in 0..2000 {
            match rng.below(10) {
                0 => {
                    let frames = 1 + rng.below(600);
                    let align = FRAME_SIZE << rng.below(10);
                    let got = f.take_block(frames * FRAME_SIZE, align);
                    let step = align / FRAME_SIZE;
                    let want = (0..=span.saturating_sub(frames))
                        .rev()
                        .filter(|s| s % step == 0)
                        .find(|s| (*s..s + frames).all(|n| free.contains(&n)));
                    assert_eq!(got.as_ref().map(|b| b.base().raw() / FRAME_SIZE), want);
                    if let Some(s) = want {
                        for n in s..s + frames {
                            free.remove(&n);
                        }
                    }
                }
                1..=5 => {
                    let got = f.alloc().map(Hfn::raw);
                    let want = free.first().copied();
                    assert_eq!(got, want);
                    if let Some(n) = want {
                        free.remove(&n);
                        lent.insert(n);
                    }
                }
                _ => {
                    let n = if lent.is_empty() || rng.below(4) == 0 {
                        rng.below(span)
                    } else {
                        *lent
                            .iter()
                            .nth(rng.below(lent.len() as u64) as usize)
                            .unwrap()
                    };
                    let back = lent.remove(&n);
                    assert_eq!(f.free(Hfn::new(n)), back);
                    if back {
                        free.insert(n);
                    }
                }
            }
            assert_eq!(f.free_bytes(), free.len() as u64 * FRAME_SIZE);
        }
    }
}
