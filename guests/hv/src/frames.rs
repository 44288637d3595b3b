//! guest-hv's physical memory: a frame allocator over the multiboot memory map (GNU Multiboot
//! Specification 0.6.96 §3.3, `mmap_*`), one bit per 4-KiB frame of the first GiB, the memory
//! rt identity-maps (a frame above it could not be reached, so it is never free here).
//!
//! `main` marks the available regions of the map free ([`Frames::add`]) and takes back what is
//! in use ([`Frames::remove`]: the first MiB, guest-hv's image, its modules). Then the guest's
//! RAM and the heap come out as [`Block`]s, contiguous and aligned, from the highest addresses
//! down ([`Frames::take_block`]); every frame left goes to the hypervisor one at a time
//! ([`Frames::alloc`], lowest first, through `backend::RealVmx`'s `PhysMemory::alloc_frame`)
//! and comes back with [`Frames::free`], to be handed out again. A second bitmap remembers
//! which frames `alloc` handed out, so a frame freed twice, or freed without having been
//! allocated (a block, the image), is ignored rather than given two owners.
//!
//! The bitmaps are atomics in a `static` taken once ([`Frames::take`]), so this file needs no
//! unsafe code; the memory of a block becomes a slice in `main`, which consumes the block. Pure
//! bookkeeping, tested on the host (`crates/nestvisor/tests/guest_hv_frames.rs` includes this
//! file).

use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use x86::{Hfn, Hpa};

/// Bytes in a frame.
pub const FRAME_SIZE: u64 = 4096;
/// rt maps physical memory below this address (at 0 and at `KERNEL_VMA`): the allocator covers
/// nothing above it.
pub const LIMIT: u64 = 1 << 30;
/// Frames below [`LIMIT`].
const FRAMES: u64 = LIMIT / FRAME_SIZE;
/// Words of one bitmap.
const WORDS: usize = (FRAMES / 64) as usize;

/// The two bitmaps of an allocator, bit `n` of word `w` for frame `64 * w + n`.
pub struct Bitmaps {
    /// Set: the frame is free.
    free: [AtomicU64; WORDS],
    /// Set: [`Frames::alloc`] handed the frame out and it has not come back.
    lent: [AtomicU64; WORDS],
}

impl Bitmaps {
    /// Every frame in use, none lent.
    pub const fn new() -> Self {
        Bitmaps {
            free: [const { AtomicU64::new(0) }; WORDS],
            lent: [const { AtomicU64::new(0) }; WORDS],
        }
    }
}

impl Default for Bitmaps {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Bitmaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitmaps({WORDS} words each)")
    }
}

/// guest-hv's bitmaps (64 KiB of its bss).
static BITMAPS: Bitmaps = Bitmaps::new();
/// Whether [`Frames::take`] has given [`BITMAPS`] out.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A run of frames taken out of the allocator for good: owning it is owning the memory, so it
/// is neither `Clone` nor `Copy`, and only [`Frames::take_block`] makes one.
#[derive(Debug)]
pub struct Block {
    base: Hpa,
    size: u64,
}

impl Block {
    /// Its first byte (aligned as asked).
    pub fn base(&self) -> Hpa {
        self.base
    }

    /// Its size in bytes, a non-zero multiple of [`FRAME_SIZE`]; it ends at or below
    /// [`LIMIT`].
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The frame allocator: the only user of its bitmaps.
pub struct Frames {
    bits: &'static Bitmaps,
    /// No free frame lies in a word below this one.
    hint: usize,
    /// Free frames.
    free: u64,
    /// Frames lent by `alloc` and not yet freed.
    lent: u64,
}

impl fmt::Debug for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames")
            .field("free", &self.free)
            .field("lent", &self.lent)
            .finish()
    }
}

/// The frames whose every byte lies in `range`, clipped to [`LIMIT`].
fn inner_frames(range: &Range<Hpa>) -> Range<u64> {
    let start = range.start.raw().div_ceil(FRAME_SIZE);
    let end = range.end.raw().min(LIMIT) / FRAME_SIZE;
    start..end.max(start)
}

/// The frames that hold some byte of `range`, clipped to [`LIMIT`].
fn touched_frames(range: &Range<Hpa>) -> Range<u64> {
    let start = (range.start.raw() / FRAME_SIZE).min(FRAMES);
    let end = range.end.raw().min(LIMIT).div_ceil(FRAME_SIZE);
    start..end.max(start)
}

/// The bits of word `w` that belong to `frames`.
fn mask(w: usize, frames: &Range<u64>) -> u64 {
    let first = w as u64 * 64;
    let lo = frames.start.saturating_sub(first).min(64);
    let hi = frames.end.saturating_sub(first).min(64);
    let ones = |n: u64| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    ones(hi) & !ones(lo)
}

impl Frames {
    /// The allocator over guest-hv's bitmaps, every frame in use. `None` once it has been
    /// taken: there is only one.
    pub fn take() -> Option<Self> {
        (!TAKEN.swap(true, Relaxed)).then(|| Self::over(&BITMAPS))
    }

    /// An allocator over `bits`, which it clears (every frame in use); `bits` must serve no
    /// other allocator (the host tests give each their own).
    pub fn over(bits: &'static Bitmaps) -> Self {
        for w in bits.free.iter().chain(&bits.lent) {
            w.store(0, Relaxed);
        }
        Frames {
            bits,
            hint: WORDS,
            free: 0,
            lent: 0,
        }
    }

    /// Marks `frames` free (`true`) or in use, keeping the count.
    fn mark(&mut self, frames: Range<u64>, free: bool) {
        if frames.is_empty() {
            return;
        }
        let words = (frames.start / 64) as usize..frames.end.div_ceil(64) as usize;
        for w in words.clone() {
            let m = mask(w, &frames);
            let old = self.bits.free[w].load(Relaxed);
            let new = if free { old | m } else { old & !m };
            self.bits.free[w].store(new, Relaxed);
            self.free = self.free + u64::from(new.count_ones()) - u64::from(old.count_ones());
        }
        if free {
            self.hint = self.hint.min(words.start);
        }
    }

    fn is_free(&self, frame: u64) -> bool {
        self.bits.free[(frame / 64) as usize].load(Relaxed) & (1 << (frame % 64)) != 0
    }

    /// Makes the whole frames inside `range` free (an available region of the memory map).
    pub fn add(&mut self, range: Range<Hpa>) {
        self.mark(inner_frames(&range), true);
    }

    /// Takes every frame that holds a byte of `range` out of the allocator (memory in use).
    pub fn remove(&mut self, range: Range<Hpa>) {
        self.mark(touched_frames(&range), false);
    }

    /// Free memory, in bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free * FRAME_SIZE
    }

    /// Takes the highest block of `size` bytes (rounded up to whole frames) whose base is a
    /// multiple of `align` (a power of two, at least [`FRAME_SIZE`]) out of the allocator.
    /// `None` when no such block is free, or `size` is 0.
    pub fn take_block(&mut self, size: u64, align: u64) -> Option<Block> {
        let n = size.div_ceil(FRAME_SIZE);
        if n == 0 || n > FRAMES || !align.is_power_of_two() || align < FRAME_SIZE {
            return None;
        }
        let step = align / FRAME_SIZE;
        // Downward from the top; `run_end` is the first frame in use above `f` (or the end).
        let mut run_end = FRAMES;
        let mut f = FRAMES;
        while f > 0 {
            if f.is_multiple_of(64) && self.bits.free[(f / 64 - 1) as usize].load(Relaxed) == 0 {
                f -= 64; // a word of frames in use
                run_end = f;
                continue;
            }
            f -= 1;
            if !self.is_free(f) {
                run_end = f;
            } else if f.is_multiple_of(step) && run_end - f >= n {
                self.mark(f..f + n, false);
                return Some(Block {
                    base: Hfn::new(f).addr(),
                    size: n * FRAME_SIZE,
                });
            }
        }
        None
    }

    /// The lowest free frame, now the caller's; `None` when every frame is in use. The frame's
    /// contents are whatever they were.
    pub fn alloc(&mut self) -> Option<Hfn> {
        for w in self.hint..WORDS {
            let word = self.bits.free[w].load(Relaxed);
            if word == 0 {
                continue;
            }
            let bit = word.trailing_zeros();
            self.bits.free[w].store(word & !(1 << bit), Relaxed);
            let lent = self.bits.lent[w].load(Relaxed);
            self.bits.lent[w].store(lent | (1 << bit), Relaxed);
            self.free -= 1;
            self.lent += 1;
            self.hint = w;
            return Some(Hfn::new(w as u64 * 64 + u64::from(bit)));
        }
        self.hint = WORDS;
        None
    }

    /// Gives back a frame [`Frames::alloc`] handed out, to be handed out again. Returns
    /// whether it was taken back: a frame the allocator did not lend (never, or not since it
    /// last came back) is ignored, so no frame ever has two owners.
    pub fn free(&mut self, frame: Hfn) -> bool {
        let f = frame.raw();
        if f >= FRAMES {
            return false;
        }
        let (w, bit) = ((f / 64) as usize, 1u64 << (f % 64));
        let lent = self.bits.lent[w].load(Relaxed);
        if lent & bit == 0 {
            return false;
        }
        self.bits.lent[w].store(lent & !bit, Relaxed);
        let free = self.bits.free[w].load(Relaxed);
        self.bits.free[w].store(free | bit, Relaxed);
        self.free += 1;
        self.lent -= 1;
        self.hint = self.hint.min(w);
        true
    }
}
