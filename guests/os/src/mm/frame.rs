//! The physical frame allocator over the multiboot memory map, with a reference count per frame
//! for pages shared copy-on-write between processes.
//!
//! Usable memory is every available region of the map minus the first MiB (BIOS and loader
//! data), the kernel image and the boot modules. Frames come from a bump pointer through those
//! pieces in address order, then from a free list threaded through freed frames; the order of
//! allocation is therefore deterministic for a given memory map, and nothing the workloads print
//! depends on which frames they got.

use super::{PAGE_SIZE, PhysAddr, page_align_down, page_align_up, phys_to_virt};
use crate::global::Global;
use rt::BootInfo;

const MAX_PIECES: usize = 64;

struct Frames {
    pieces: [(u64, u64); MAX_PIECES],
    piece_count: usize,
    /// Index of the piece the bump pointer is in.
    cursor: usize,
    /// Next never-used frame in `pieces[cursor]`.
    bump: u64,
    /// The first free frame; each holds the next one's address (0: none) in its first word.
    free_head: Option<PhysAddr>,
    /// Reference counts, indexed by frame number, reached through the physical window.
    refcounts: PhysAddr,
    frame_count: u64,
}

static FRAMES: Global<Frames> = Global::new(Frames {
    pieces: [(0, 0); MAX_PIECES],
    piece_count: 0,
    cursor: 0,
    bump: 0,
    free_head: None,
    refcounts: PhysAddr::new(0),
    frame_count: 0,
});

/// Removes `[start, end)` from the piece list.
fn carve(pieces: &mut [(u64, u64); MAX_PIECES], count: &mut usize, start: u64, end: u64) {
    let mut i = 0;
    while i < *count {
        let (s, e) = pieces[i];
        if end <= s || start >= e {
            i += 1;
            continue;
        }
        if start > s && end < e {
            // Split in two; the tail goes at the end of the list (sorted again below).
            pieces[i] = (s, start);
            if *count < MAX_PIECES {
                pieces[*count] = (end, e);
                *count += 1;
            }
            i += 1;
        } else if start > s {
            pieces[i] = (s, start);
            i += 1;
        } else if end < e {
            pieces[i] = (end, e);
            i += 1;
        } else {
            pieces.copy_within(i + 1..*count, i);
            *count -= 1;
        }
    }
}

/// Builds the allocator from the memory map. Returns the end of the highest usable frame.
pub fn init(boot: &BootInfo) -> u64 {
    let mut f = FRAMES.lock();
    let mut count = 0;
    for region in boot.available() {
        let (Some(start), end) = (page_align_up(region.base), page_align_down(region.end())) else {
            continue;
        };
        if start < end && count < MAX_PIECES {
            f.pieces[count] = (start, end);
            count += 1;
        }
    }
    carve(&mut f.pieces, &mut count, 0, 1 << 20);
    let (image_start, image_end) = rt::image_phys_range();
    carve(&mut f.pieces, &mut count, image_start, image_end);
    for module in boot.modules() {
        let end = page_align_up(module.end).unwrap_or(u64::MAX);
        carve(
            &mut f.pieces,
            &mut count,
            page_align_down(module.start),
            end,
        );
    }
    let pieces = &mut f.pieces[..count];
    pieces.sort_unstable();
    let top = pieces.iter().map(|p| p.1).max().unwrap_or(0);
    assert!(count > 0, "no usable memory in the multiboot memory map");
    f.piece_count = count;
    f.frame_count = top / PAGE_SIZE;

    // The reference counts take the first frames of the first piece large enough.
    let bytes = page_align_up(f.frame_count * 2).unwrap_or(u64::MAX);
    let Some(i) = f.pieces[..count].iter().position(|(s, e)| e - s >= bytes) else {
        panic!("no room for {bytes} bytes of frame reference counts");
    };
    let start = f.pieces[i].0;
    f.refcounts = PhysAddr::new(start);
    f.pieces[i].0 += bytes;
    // SAFETY: the range is usable RAM taken out of the allocator, below the early 1-GiB window
    // (the map is sorted and the counts are small), and nobody else refers to it.
    unsafe { core::ptr::write_bytes(phys_to_virt(f.refcounts), 0, bytes as usize) };
    f.cursor = 0;
    f.bump = f.pieces[0].0;
    top
}

impl Frames {
    fn take(&mut self) -> Option<PhysAddr> {
        if let Some(pa) = self.free_head {
            // SAFETY: a free frame holds the address of the next one in its first word.
            let next = unsafe { phys_to_virt(pa).cast::<u64>().read() };
            self.free_head = (next != 0).then_some(PhysAddr::new(next));
            return Some(pa);
        }
        while self.cursor < self.piece_count {
            let (_, end) = self.pieces[self.cursor];
            if self.bump < end {
                let pa = PhysAddr::new(self.bump);
                self.bump += PAGE_SIZE;
                return Some(pa);
            }
            self.cursor += 1;
            if self.cursor < self.piece_count {
                self.bump = self.pieces[self.cursor].0;
            }
        }
        None
    }

    fn refcount(&mut self, pa: PhysAddr) -> &mut u16 {
        let n = pa.frame_number();
        assert!(n < self.frame_count, "frame {pa:?} outside the allocator");
        // SAFETY: the table holds frame_count counters and belongs to the allocator.
        unsafe { &mut *phys_to_virt(self.refcounts).cast::<u16>().add(n as usize) }
    }
}

/// Allocates a zeroed frame with reference count 1.
pub fn alloc_zeroed() -> Option<PhysAddr> {
    let pa = alloc_uninit()?;
    // SAFETY: the frame was just taken from the allocator; nothing else refers to it.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa), 0, PAGE_SIZE as usize) };
    Some(pa)
}

/// Allocates a frame with reference count 1 and unspecified contents.
pub fn alloc_uninit() -> Option<PhysAddr> {
    let mut f = FRAMES.lock();
    let pa = f.take()?;
    *f.refcount(pa) = 1;
    Some(pa)
}

/// Adds a reference to a frame (a page shared copy-on-write).
pub fn share(pa: PhysAddr) {
    let mut f = FRAMES.lock();
    let count = f.refcount(pa);
    assert!(*count < u16::MAX, "frame {pa:?}: reference count overflow");
    *count += 1;
}

/// The number of references to a frame.
pub fn references(pa: PhysAddr) -> u16 {
    *FRAMES.lock().refcount(pa)
}

/// Drops a reference; the frame returns to the allocator with the last one.
pub fn release(pa: PhysAddr) {
    let mut f = FRAMES.lock();
    let count = f.refcount(pa);
    assert!(*count > 0, "release of free frame {pa:?}");
    *count -= 1;
    if *count == 0 {
        let next = f.free_head.map_or(0, PhysAddr::as_u64);
        // SAFETY: the last reference is gone; the frame is ours to link into the free list.
        unsafe { phys_to_virt(pa).cast::<u64>().write(next) };
        f.free_head = Some(pa);
    }
}
