//! The physical frame allocator over the multiboot memory map, with a reference count per frame
//! for pages shared copy-on-write between processes.
//!
//! Usable memory is every available region of the map minus the first MiB (BIOS and loader
//! data), the kernel image and the boot modules. Frames come from a bump pointer through those
//! ranges in address order, then from a free list threaded through freed frames; the order of
//! allocation is therefore deterministic for a given memory map, and nothing the workloads print
//! depends on which frames they got.

use super::ranges::PageRanges;
use super::{PAGE_SIZE, PhysAddr, phys_to_virt};
use crate::global::Global;
use rt::BootInfo;

struct Frames {
    /// Usable memory, sorted and disjoint.
    usable: PageRanges,
    /// Index of the range the bump pointer is in.
    cursor: usize,
    /// Next never-used frame in `usable[cursor]`.
    bump: u64,
    /// The first free frame; each holds the next one's address (0: none) in its first word.
    free_head: Option<PhysAddr>,
    /// Reference counts, indexed by frame number, reached through the physical window.
    refcounts: PhysAddr,
    frame_count: u64,
}

static FRAMES: Global<Frames> = Global::new(Frames {
    usable: PageRanges::new(),
    cursor: 0,
    bump: 0,
    free_head: None,
    refcounts: PhysAddr::new(0),
    frame_count: 0,
});

/// Builds the allocator from the memory map. Returns the end of the highest usable frame.
pub fn init(boot: &BootInfo) -> u64 {
    let mut f = FRAMES.lock();
    for region in boot.available() {
        if !f.usable.add(region.base, region.end()) {
            rt::println!("guest-os: too many memory regions; ignoring {region:x?}");
        }
    }
    f.usable.remove(0, 1 << 20);
    let (image_start, image_end) = rt::image_phys_range();
    f.usable.remove(image_start, image_end);
    for module in boot.modules() {
        f.usable.remove(module.start, module.end);
    }
    let top = f.usable.as_slice().last().map_or(0, |&(_, end)| end);
    assert!(top > 0, "no usable memory in the multiboot memory map");
    f.frame_count = top / PAGE_SIZE;

    // The reference counts take the first frames of the first range large enough.
    let bytes = (f.frame_count * 2).next_multiple_of(PAGE_SIZE);
    let Some(&(start, _)) = f.usable.as_slice().iter().find(|(s, e)| e - s >= bytes) else {
        panic!("no room for {bytes} bytes of frame reference counts");
    };
    f.usable.remove(start, start + bytes);
    f.refcounts = PhysAddr::new(start);
    // SAFETY: the range is usable RAM taken out of the allocator, below the early 1-GiB window
    // (the ranges are sorted and the counts are small), and nobody else refers to it.
    unsafe { core::ptr::write_bytes(phys_to_virt(f.refcounts), 0, bytes as usize) };
    f.cursor = 0;
    f.bump = f.usable.as_slice().first().map_or(0, |&(start, _)| start);
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
        while let Some(&(_, end)) = self.usable.as_slice().get(self.cursor) {
            if self.bump < end {
                let pa = PhysAddr::new(self.bump);
                self.bump += PAGE_SIZE;
                return Some(pa);
            }
            self.cursor += 1;
            if let Some(&(start, _)) = self.usable.as_slice().get(self.cursor) {
                self.bump = start;
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
