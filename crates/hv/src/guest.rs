//! Software walks of the guest's own page tables, for the hypervisor's emulation (reading the
//! instruction at the guest's RIP): `crates/paging`'s walker over the guest's memory, as KVM's
//! emulator walks with `paging_tmpl.h`. Read-only: the walk does not set the guest's
//! accessed and dirty flags (the processor already set them when it fetched the instruction).

use paging::{
    Access, AccessKind, Direct, GuestPaging, Memory, MemoryError, PagingContext, PagingMode,
    Privilege, load_pdptes,
};
use x86::Gpa;

use crate::memory::PhysMemory;

/// The registers that select the guest's paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
}

/// Where the guest's RAM is: guest-physical `[0, size)` at host-physical `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    /// Host-physical address of guest-physical 0.
    pub base: x86::Hpa,
    /// Bytes of guest RAM.
    pub size: u64,
}

/// The guest's physical memory: its RAM in host memory; beyond RAM reads fail. Writes are
/// refused (the walk is read-only).
struct GuestRam<'a, M> {
    mem: &'a mut M,
    layout: RamLayout,
}

impl<M: PhysMemory> Memory<Gpa> for GuestRam<'_, M> {
    fn read_u32(&mut self, addr: Gpa) -> Result<u32, MemoryError<Gpa>> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&mut self, addr: Gpa) -> Result<u64, MemoryError<Gpa>> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u32(&mut self, addr: Gpa, _: u32) -> Result<(), MemoryError<Gpa>> {
        Err(MemoryError { addr })
    }
    fn write_u64(&mut self, addr: Gpa, _: u64) -> Result<(), MemoryError<Gpa>> {
        Err(MemoryError { addr })
    }
}

impl<M: PhysMemory> GuestRam<'_, M> {
    fn read(&mut self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemoryError<Gpa>> {
        if addr.raw().saturating_add(buf.len() as u64) > self.layout.size {
            return Err(MemoryError { addr });
        }
        self.mem
            .read(self.layout.base.wrapping_add(addr.raw()), buf)
            .map_err(|_| MemoryError { addr })
    }
}

/// The guest-physical address of the linear `lin` for a supervisor read, or `None` when the
/// guest's tables do not map it (or are not in its RAM). Accessed/dirty flags are not set:
/// the guest's tables are only read.
pub fn translate<M: PhysMemory>(
    mem: &mut M,
    regs: &PagingRegs,
    layout: RamLayout,
    lin: u64,
) -> Option<u64> {
    let mode = PagingMode::from_registers(regs.cr0, regs.cr4, regs.efer);
    if mode == PagingMode::Disabled {
        return Some(lin & 0xffff_ffff);
    }
    let ctx = PagingContext::from_registers(regs.cr0, regs.cr4, regs.efer, 0, 39, true).ok()?;
    let mut ram = GuestRam { mem, layout };
    let pdptes = if mode == PagingMode::Pae {
        Some(load_pdptes::<Gpa, _>(&mut Direct(&mut ram), regs.cr3, 39).ok()?)
    } else {
        None
    };
    let format = GuestPaging::<Gpa>::new(mode, regs.cr3, pdptes, ctx).ok()?;
    let access = Access::new(AccessKind::Read, Privilege::Implicit);
    let gva = x86::Gva::new(lin);
    let mut tables = Direct(&mut ram);
    // The walk without its commit: accessed/dirty updates are not written.
    let addr = match format {
        GuestPaging::Bits32(f) => paging::walk(&f, &mut tables, gva, access)
            .ok()
            .map(|w| w.translation().addr),
        GuestPaging::Pae(f) => paging::walk(&f, &mut tables, gva, access)
            .ok()
            .map(|w| w.translation().addr),
        GuestPaging::Level4(f) => paging::walk(&f, &mut tables, gva, access)
            .ok()
            .map(|w| w.translation().addr),
        GuestPaging::Level5(f) => paging::walk(&f, &mut tables, gva, access)
            .ok()
            .map(|w| w.translation().addr),
    }?;
    Some(addr.raw())
}
