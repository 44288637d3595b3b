//! A process's virtual memory: its address space and the regions (VMAs) it may touch, with
//! demand-zero faulting, copy-on-write after fork, and brk / mmap / munmap / mprotect.
//!
//! Pages are created on first touch (SDM Vol. 3A §4.7: a not-present fault, P=0 in the error
//! code, inside a region gets a zeroed frame) or duplicated on the first write to a shared page
//! (a protection fault on a [`pte::COW`] leaf). Translations are invalidated as the SDM requires
//! (§4.10.4): INVLPG for a single changed page of the current address space, a CR3 load without
//! the PCID no-flush bit when many pages changed at once; a not-present to present change needs
//! no invalidation (§4.10.4.3).

use crate::errno::{EFAULT, EINVAL, ENOMEM, Errno};
use crate::mm::paging::{self, AddressSpace, Entry, USER_END, pte};
use crate::mm::{PAGE_SIZE, PhysAddr, VirtAddr, frame, page_align_up, phys_to_virt};
use crate::proc;
use crate::regions::{RegionError, Regions};
use crate::trap::pf;
use core::fmt;

pub const PROT_READ: u64 = 1;
pub const PROT_WRITE: u64 = 2;
pub const PROT_EXEC: u64 = 4;

/// Anonymous mappings are placed first-fit from here.
pub const MMAP_BASE: u64 = 0x0000_1000_0000_0000;
/// The top of the user stack (its region is [`STACK_SIZE`] below).
pub const STACK_TOP: u64 = 0x0000_7FFF_FFFF_F000;
pub const STACK_SIZE: u64 = 8 << 20;

/// Above this many single-page invalidations, reload CR3 instead.
const INVLPG_LIMIT: usize = 32;

/// Why a user access could not be satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    KernelAddress,
    NoMapping,
    NotWritable,
    NotExecutable,
    OutOfMemory,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultError::KernelAddress => "address in the kernel half",
            FaultError::NoMapping => "no mapping there",
            FaultError::NotWritable => "region is not writable",
            FaultError::NotExecutable => "region is not executable",
            FaultError::OutOfMemory => "out of memory",
        })
    }
}

/// The kind of a user access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// The address space of one process and its regions.
#[derive(Debug)]
pub struct Mm {
    space: AddressSpace,
    regions: Regions,
    heap_start: u64,
    brk: u64,
    /// The PCID this address space is loaded with.
    pub pcid: u16,
}

/// Pages whose translations changed in the current address space.
struct Invalidation {
    pages: [VirtAddr; INVLPG_LIMIT],
    count: usize,
    overflow: bool,
}

impl Invalidation {
    fn new() -> Self {
        Invalidation {
            pages: [VirtAddr::new(0); INVLPG_LIMIT],
            count: 0,
            overflow: false,
        }
    }

    fn add(&mut self, va: VirtAddr) {
        if self.count < INVLPG_LIMIT {
            self.pages[self.count] = va;
            self.count += 1;
        } else {
            self.overflow = true;
        }
    }
}

fn leaf_flags(prot: u64) -> u64 {
    let mut flags = pte::P | pte::U;
    if prot & PROT_WRITE != 0 {
        flags |= pte::W;
    }
    if prot & PROT_EXEC == 0 {
        flags |= paging::nx();
    }
    flags
}

/// Checks a user range: page-aligned start when `aligned`, non-empty, inside the user half.
fn user_range(start: u64, len: u64, aligned: bool) -> Result<(u64, u64), Errno> {
    if aligned && !start.is_multiple_of(PAGE_SIZE) {
        return Err(EINVAL);
    }
    let end = start.checked_add(len).ok_or(EINVAL)?;
    if len == 0 || end > USER_END {
        return Err(EINVAL);
    }
    Ok((start, end))
}

impl Mm {
    /// An empty address space. None when memory is exhausted.
    pub fn new() -> Option<Mm> {
        Some(Mm {
            space: AddressSpace::new()?,
            regions: Regions::new(),
            heap_start: 0,
            brk: 0,
            pcid: 0,
        })
    }

    /// Physical address of the PML4.
    pub fn root(&self) -> PhysAddr {
        self.space.root()
    }

    /// A copy-on-write duplicate for a child. The caller must flush this address space's
    /// translations (every writable page became read-only).
    pub fn fork(&self) -> Option<Mm> {
        Some(Mm {
            space: self.space.fork()?,
            regions: self.regions,
            heap_start: self.heap_start,
            brk: self.brk,
            pcid: 0,
        })
    }

    /// Frees every page and table. The hierarchy must not be loaded.
    pub fn destroy(self) {
        self.space.destroy();
    }

    /// Sets the program break's base (end of the loaded image).
    pub fn set_heap_start(&mut self, start: u64) {
        self.heap_start = start;
        self.brk = start;
    }

    /// Adds a region over unmapped addresses.
    pub fn add_region(&mut self, start: u64, end: u64, prot: u64) -> Result<(), Errno> {
        self.regions.insert(start, end, prot).map_err(errno)
    }

    fn flush(&self, inv: &Invalidation) {
        if inv.overflow {
            paging::load(self.root(), self.pcid, false);
        } else {
            inv.pages[..inv.count]
                .iter()
                .for_each(|&va| rt::arch::invlpg(va.as_u64()));
        }
    }

    /// Unmaps `[start, end)`: regions shrink or go, pages are freed.
    fn unmap_range(&mut self, start: u64, end: u64) -> Result<(), Errno> {
        self.regions.remove(start, end).map_err(errno)?;
        let mut inv = Invalidation::new();
        self.space
            .for_each_leaf(VirtAddr::new(start), VirtAddr::new(end), |va, e| {
                frame::release(e.frame());
                e.set(0);
                inv.add(va);
            });
        self.flush(&inv);
        Ok(())
    }

    /// munmap(2): page-aligned start, length rounded up to pages.
    pub fn munmap(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        let (start, end) = user_range(start, len, true)?;
        self.unmap_range(start, page_align_up(end).ok_or(EINVAL)?)
    }

    /// mmap(2) of anonymous, private, demand-zero memory placed by the kernel (first fit above
    /// [`MMAP_BASE`]). Returns the address.
    pub fn mmap(&mut self, len: u64, prot: u64) -> Result<u64, Errno> {
        check_prot(prot)?;
        let len = page_align_up(len).filter(|&l| l > 0).ok_or(EINVAL)?;
        let at = self
            .regions
            .first_fit(MMAP_BASE, len, STACK_TOP - STACK_SIZE)
            .ok_or(ENOMEM)?;
        let end = at + len;
        self.add_region(at, end, prot)?;
        Ok(at)
    }

    /// mprotect(2): every page of the range must be mapped.
    pub fn mprotect(&mut self, start: u64, len: u64, prot: u64) -> Result<(), Errno> {
        check_prot(prot)?;
        let (start, end) = user_range(start, len, true)?;
        let end = page_align_up(end).ok_or(EINVAL)?;
        self.regions.protect(start, end, prot).map_err(errno)?;
        let flags = leaf_flags(prot);
        let mut inv = Invalidation::new();
        self.space
            .for_each_leaf(VirtAddr::new(start), VirtAddr::new(end), |va, e| {
                let old = e.get();
                let mut new = (old & (pte::ADDR | pte::COW)) | flags;
                if old & pte::COW != 0 {
                    new &= !pte::W; // stays read-only until the copy is made
                }
                if new != old {
                    e.set(new);
                    inv.add(va);
                }
            });
        self.flush(&inv);
        Ok(())
    }

    /// brk(2): moves the program break; returns the new break, or the old one on failure (and
    /// for `addr` 0 or below the heap's base, which only ask).
    pub fn brk(&mut self, addr: u64) -> u64 {
        if addr < self.heap_start || addr >= MMAP_BASE {
            return self.brk;
        }
        let (Some(old_end), Some(new_end)) = (page_align_up(self.brk), page_align_up(addr)) else {
            return self.brk;
        };
        let ok = if new_end > old_end {
            self.add_region(old_end, new_end, PROT_READ | PROT_WRITE)
                .is_ok()
        } else if new_end < old_end {
            self.unmap_range(new_end, old_end).is_ok()
        } else {
            true
        };
        if ok {
            self.brk = addr;
        }
        self.brk
    }

    /// Makes `va` accessible for `access`, as the page-fault handler does: a zeroed frame for a
    /// first touch, a private copy for a write to a shared page.
    pub fn resolve(&mut self, va: VirtAddr, access: Access) -> Result<(), FaultError> {
        let vma = self
            .regions
            .find(va.as_u64())
            .ok_or(FaultError::NoMapping)?;
        match access {
            Access::Write if vma.prot & PROT_WRITE == 0 => return Err(FaultError::NotWritable),
            Access::Execute if vma.prot & PROT_EXEC == 0 => return Err(FaultError::NotExecutable),
            _ => {}
        }
        let page = va.page();
        let e = self
            .space
            .entry_or_create(page)
            .ok_or(FaultError::OutOfMemory)?;
        let old = e.get();
        if old & pte::P == 0 {
            let frame = frame::alloc_zeroed().ok_or(FaultError::OutOfMemory)?;
            e.map(frame, leaf_flags(vma.prot));
            return Ok(());
        }
        if access == Access::Write && old & pte::W == 0 {
            let old_frame = e.frame();
            let new_frame = if old & pte::COW != 0 && frame::references(old_frame) > 1 {
                let copy = frame::alloc_uninit().ok_or(FaultError::OutOfMemory)?;
                // SAFETY: both frames are RAM reached through the physical window; the copy is
                // fresh and the original stays alive (we still hold a reference).
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        phys_to_virt(old_frame),
                        phys_to_virt(copy),
                        PAGE_SIZE as usize,
                    )
                };
                frame::release(old_frame);
                copy
            } else {
                old_frame
            };
            e.map(new_frame, leaf_flags(vma.prot));
        }
        // The entry was present: the old translation may be cached (or the fault came from a
        // stale one), so invalidate it.
        rt::arch::invlpg(page.as_u64());
        Ok(())
    }

    /// The frame backing user page `va`, made accessible for `access`.
    fn user_frame(&mut self, va: VirtAddr, access: Access) -> Result<Entry, Errno> {
        self.resolve(va, access).map_err(|e| {
            if e == FaultError::OutOfMemory {
                ENOMEM
            } else {
                EFAULT
            }
        })?;
        self.space.entry(va.page()).ok_or(EFAULT)
    }

    /// Copies user memory at `va` into `buf` (through the physical window, so `self` need not be
    /// the loaded address space).
    pub fn copy_in(&mut self, va: VirtAddr, buf: &mut [u8]) -> Result<(), Errno> {
        let mut done = 0;
        while done < buf.len() {
            let at = va.as_u64().checked_add(done as u64).ok_or(EFAULT)?;
            if at >= USER_END {
                return Err(EFAULT);
            }
            let at = VirtAddr::new(at);
            let offset = at.page_offset();
            let chunk = ((PAGE_SIZE - offset) as usize).min(buf.len() - done);
            let e = self.user_frame(at, Access::Read)?;
            // SAFETY: the frame is a live user page of this address space; the chunk stays inside it.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    phys_to_virt(e.frame().offset(offset)),
                    buf[done..].as_mut_ptr(),
                    chunk,
                )
            };
            done += chunk;
        }
        Ok(())
    }

    /// Copies `data` to user memory at `va` (copy-on-write honoured).
    pub fn copy_out(&mut self, va: VirtAddr, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0;
        while done < data.len() {
            let at = va.as_u64().checked_add(done as u64).ok_or(EFAULT)?;
            if at >= USER_END {
                return Err(EFAULT);
            }
            let at = VirtAddr::new(at);
            let offset = at.page_offset();
            let chunk = ((PAGE_SIZE - offset) as usize).min(data.len() - done);
            let e = self.user_frame(at, Access::Write)?;
            // SAFETY: as in copy_in; the page is private and writable after resolve.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data[done..].as_ptr(),
                    phys_to_virt(e.frame().offset(offset)),
                    chunk,
                )
            };
            done += chunk;
        }
        Ok(())
    }

    /// Maps a fresh page at `va` with `prot` and fills it from `bytes` at `offset` (ELF loading).
    pub fn map_filled(
        &mut self,
        va: VirtAddr,
        prot: u64,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Errno> {
        let e = self.space.entry_or_create(va).ok_or(ENOMEM)?;
        if e.present() {
            return Err(EINVAL);
        }
        let frame = frame::alloc_zeroed().ok_or(ENOMEM)?;
        // SAFETY: the frame is fresh; offset + len stays inside it (checked by the caller).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                phys_to_virt(frame).add(offset),
                bytes.len(),
            )
        };
        e.map(frame, leaf_flags(prot));
        Ok(())
    }
}

fn errno(e: RegionError) -> Errno {
    match e {
        RegionError::Invalid => EINVAL,
        // Linux: ENOMEM for too many mappings and for ranges that are not mapped.
        RegionError::Full | RegionError::Unmapped => ENOMEM,
    }
}

fn check_prot(prot: u64) -> Result<(), Errno> {
    // x86 paging cannot express write-only or no-access pages without protection keys; every
    // region is readable.
    if prot & PROT_READ == 0 || prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// Resolves a ring-3 page fault in the current process.
pub fn user_page_fault(addr: u64, error: u64) -> Result<(), FaultError> {
    if error & pf::RESERVED != 0 {
        return Err(FaultError::NoMapping);
    }
    let access = if error & pf::FETCH != 0 {
        Access::Execute
    } else if error & pf::WRITE != 0 {
        Access::Write
    } else {
        Access::Read
    };
    if addr >= USER_END {
        return Err(FaultError::KernelAddress);
    }
    proc::with_current_mm(|mm| mm.resolve(VirtAddr::new(addr), access))
}
