//! EPT tables a hypervisor builds for its guest (SDM Vol. 3C §29.3): a 4-level structure of
//! frames from [`PhysMemory`], with 4-KiB and 2-MiB leaves, write-back memory type, and the
//! EPTP that names it. Used for EPT01 (guest-physical → host-physical); the hardware (or the
//! software CPU) walks it, and `crates/paging`'s walker checks it in the tests.
//!
//! Mappings are added one page at a time; a 2-MiB leaf where a table already hangs, or a 4-KiB
//! page under an existing 2-MiB leaf, is refused ([`EptError::Conflict`]) rather than silently
//! replacing what is there. [`Ept::unmap`] removes a leaf; the caller owes an INVEPT (SDM
//! §29.4.3.1) before the guest may rely on the change.

use alloc::vec::Vec;
use core::fmt;

use x86::paging::{Eptp, ept};
use x86::{Gpa, Hfn, Hpa};

use crate::memory::{MemError, PhysMemory};

/// The size of a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// A 4-KiB page (a PTE).
    Size4K,
    /// A 2-MiB page (a PDE with bit 7).
    Size2M,
}

impl PageSize {
    /// The page's size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
        }
    }

    /// The level of its leaf (1 = PTE, 2 = PDE).
    const fn level(self) -> u32 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
        }
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// No frame left for a table.
    OutOfFrames,
    /// The table memory could not be accessed.
    Memory(MemError),
    /// An address not aligned to the page size, or beyond the 48-bit guest-physical range.
    Misaligned,
    /// Something else is mapped there already (a leaf of another size, or a table where a
    /// large leaf was asked for).
    Conflict,
}

impl From<MemError> for EptError {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfFrames => write!(f, "no frame left for an EPT table"),
            Self::Memory(e) => write!(f, "EPT table memory: {e}"),
            Self::Misaligned => write!(f, "EPT mapping not aligned to its page size"),
            Self::Conflict => write!(f, "EPT mapping conflicts with an existing one"),
        }
    }
}

/// Memory type write-back (6) in EPT leaves and the EPTP (SDM Vol. 3C §29.3.7).
const WB: u64 = 6;

/// A 4-level EPT structure.
#[derive(Debug)]
pub struct Ept {
    root: Hfn,
    /// Every table frame, the root first (freed by [`Ept::free`]).
    tables: Vec<Hfn>,
    accessed_dirty: bool,
}

impl Ept {
    /// An empty structure (nothing mapped); `accessed_dirty` sets EPTP bit 6.
    pub fn new<M: PhysMemory>(mem: &mut M, accessed_dirty: bool) -> Result<Self, EptError> {
        let root = mem.alloc_frame().ok_or(EptError::OutOfFrames)?;
        Ok(Self {
            root,
            tables: alloc::vec![root],
            accessed_dirty,
        })
    }

    /// The EPT pointer: the PML4 frame, walk length 4, write-back, A/D as asked.
    pub fn eptp(&self) -> Eptp {
        let ad = if self.accessed_dirty {
            Eptp::AD_ENABLE
        } else {
            0
        };
        Eptp::new(self.root.addr().raw() | (3 << 3) | WB | ad)
    }

    /// Maps the guest-physical page at `gpa` to the host-physical page at `hpa` with the
    /// permission bits `rights` (a subset of [`ept::RWX`]).
    pub fn map<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        gpa: Gpa,
        hpa: Hpa,
        size: PageSize,
        rights: u64,
    ) -> Result<(), EptError> {
        let bytes = size.bytes();
        if !gpa.is_aligned(bytes) || !hpa.is_aligned(bytes) || gpa.raw() >> 48 != 0 {
            return Err(EptError::Misaligned);
        }
        let mut table = self.root.addr();
        for level in (size.level() + 1..=4).rev() {
            let at = entry_addr(table, gpa, level);
            let e = mem.read_u64(at)?;
            table = if e & ept::RWX == 0 {
                let frame = mem.alloc_frame().ok_or(EptError::OutOfFrames)?;
                self.tables.push(frame);
                mem.write_u64(at, frame.addr().raw() | ept::RWX)?;
                frame.addr()
            } else if e & ept::LARGE_PAGE != 0 {
                return Err(EptError::Conflict);
            } else {
                Hpa::new(e & ept::ADDR_MASK)
            };
        }
        let at = entry_addr(table, gpa, size.level());
        let old = mem.read_u64(at)?;
        let large = if size == PageSize::Size2M {
            ept::LARGE_PAGE
        } else {
            0
        };
        if old & ept::RWX != 0 && (old & ept::LARGE_PAGE) != large {
            return Err(EptError::Conflict);
        }
        let leaf = hpa.raw() | (rights & ept::RWX) | (WB << ept::MEMORY_TYPE_SHIFT) | large;
        mem.write_u64(at, leaf)?;
        Ok(())
    }

    /// Removes the leaf that maps `gpa` (of either size); `false` if nothing mapped it.
    pub fn unmap<M: PhysMemory>(&mut self, mem: &mut M, gpa: Gpa) -> Result<bool, EptError> {
        let mut table = self.root.addr();
        for level in (1..=4).rev() {
            let at = entry_addr(table, gpa, level);
            let e = mem.read_u64(at)?;
            if e & ept::RWX == 0 {
                return Ok(false);
            }
            if level == 1 || e & ept::LARGE_PAGE != 0 {
                mem.write_u64(at, 0)?;
                return Ok(true);
            }
            table = Hpa::new(e & ept::ADDR_MASK);
        }
        Ok(false)
    }

    /// Returns every table frame to `mem`.
    pub fn free<M: PhysMemory>(self, mem: &mut M) {
        for f in self.tables {
            mem.free_frame(f);
        }
    }

    /// How many table frames the structure uses.
    pub fn table_frames(&self) -> usize {
        self.tables.len()
    }
}

/// The address of the entry for `gpa` at `level` (4 = PML4 … 1 = PT) in `table`.
fn entry_addr(table: Hpa, gpa: Gpa, level: u32) -> Hpa {
    let index = (gpa.raw() >> (12 + 9 * (level - 1))) & 0x1ff;
    table.wrapping_add(index * 8)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::memory::VecMemory;
    use paging::{AccessKind, EptAccess, EptCaps, EptOrigin, MemoryError};

    /// The walker's view of a [`VecMemory`].
    struct Walk<'a>(&'a mut VecMemory);

    impl paging::Memory<Hpa> for Walk<'_> {
        fn read_u32(&mut self, addr: Hpa) -> Result<u32, MemoryError<Hpa>> {
            let mut b = [0u8; 4];
            self.0
                .read(addr, &mut b)
                .map_err(|_| MemoryError { addr })?;
            Ok(u32::from_le_bytes(b))
        }
        fn read_u64(&mut self, addr: Hpa) -> Result<u64, MemoryError<Hpa>> {
            self.0.read_u64(addr).map_err(|_| MemoryError { addr })
        }
        fn write_u32(&mut self, addr: Hpa, v: u32) -> Result<(), MemoryError<Hpa>> {
            self.0
                .write(addr, &v.to_le_bytes())
                .map_err(|_| MemoryError { addr })
        }
        fn write_u64(&mut self, addr: Hpa, v: u64) -> Result<(), MemoryError<Hpa>> {
            self.0.write_u64(addr, v).map_err(|_| MemoryError { addr })
        }
    }

    /// What the SDM's walk (crates/paging) makes of `gpa` under `eptp`.
    fn walk(mem: &mut VecMemory, eptp: Eptp, gpa: u64, kind: AccessKind) -> Option<u64> {
        let caps = EptCaps::from_msr(0x0006_0000 | 1 << 6 | 1 << 14 | 1 << 16 | 1 << 21);
        let f = paging::Ept::<Gpa, Hpa>::new(eptp, &caps, 39, false).unwrap();
        let access = EptAccess::new(kind, EptOrigin::NoLinear);
        paging::translate(&f, &mut Walk(mem), Gpa::new(gpa), access)
            .ok()
            .map(|t| t.addr.raw())
    }

    #[test]
    fn mappings_translate_as_the_walker_reads_them() {
        let mut mem = VecMemory::new(16 << 20, 0x800..0x1000);
        let mut e = Ept::new(&mut mem, false).unwrap();
        e.map(
            &mut mem,
            Gpa::new(0x20_0000),
            Hpa::new(0x60_0000),
            PageSize::Size2M,
            ept::RWX,
        )
        .unwrap();
        e.map(
            &mut mem,
            Gpa::new(0x1000),
            Hpa::new(0x5000),
            PageSize::Size4K,
            ept::READ,
        )
        .unwrap();
        let eptp = e.eptp();
        assert_eq!(
            walk(&mut mem, eptp, 0x20_1234, AccessKind::Write),
            Some(0x60_1234)
        );
        assert_eq!(walk(&mut mem, eptp, 0x1008, AccessKind::Read), Some(0x5008));
        assert_eq!(
            walk(&mut mem, eptp, 0x1008, AccessKind::Write),
            None,
            "read-only"
        );
        assert_eq!(
            walk(&mut mem, eptp, 0x2000, AccessKind::Read),
            None,
            "not mapped"
        );
        // Conflicts: a 2-MiB leaf over the table that holds the 4-KiB page, and the reverse.
        assert_eq!(
            e.map(
                &mut mem,
                Gpa::new(0),
                Hpa::new(0),
                PageSize::Size2M,
                ept::RWX
            ),
            Err(EptError::Conflict)
        );
        assert_eq!(
            e.map(
                &mut mem,
                Gpa::new(0x20_1000),
                Hpa::new(0),
                PageSize::Size4K,
                ept::RWX
            ),
            Err(EptError::Conflict)
        );
        assert_eq!(
            e.map(
                &mut mem,
                Gpa::new(0x1800),
                Hpa::new(0),
                PageSize::Size4K,
                ept::RWX
            ),
            Err(EptError::Misaligned)
        );
        assert_eq!(e.unmap(&mut mem, Gpa::new(0x20_0000)), Ok(true));
        assert_eq!(walk(&mut mem, eptp, 0x20_1234, AccessKind::Read), None);
        assert_eq!(e.table_frames(), 4, "PML4, PDPT, PD, PT");
        e.free(&mut mem);
        assert_eq!(mem.alloc_frame().map(|f| f.raw() >= 0x800), Some(true));
    }
}
