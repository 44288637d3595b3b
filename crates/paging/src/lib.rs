//! One generic x86 page walker for every paging mode and for EPT, and the two-dimensional walk.
//!
//! Both the hardware model (every TLB miss of the software CPU) and the hypervisor (software
//! walks for shadow paging, nested EPT and instruction emulation) translate addresses with this
//! crate, the way KVM's `paging_tmpl.h` serves 32-bit, PAE, 4-level and EPT paging.
//!
//! # Design
//!
//! - **Formats.** [`PagingFormat`] describes one paging mode: its levels, the width of its
//!   entries, where the top-level entry comes from ([`Root`]: a table, or the PDPTE registers
//!   of PAE paging), how an input address indexes each table, how an entry decodes
//!   ([`Decoded`]: not present, reserved bit, next table, or a leaf with its page size and
//!   rights), how the combined rights are checked against an access, which faults result and
//!   which accessed/dirty flags a successful access sets. It is implemented by [`Paging32`]
//!   (SDM Vol. 3A §4.3), [`Pae`] (§4.4), [`Paging4`] and [`Paging5`] (§4.5) and [`Ept`]
//!   (Vol. 3C §29.3). A format value carries its root and the control bits that affect
//!   translation ([`PagingContext`] for guest paging; EPTP, capabilities and MBEC for EPT).
//! - **One walk.** [`walk`] is the only walk: generic and monomorphised per format, no `dyn`,
//!   no allocation, at most one entry read per level (so at most five reads, whatever the
//!   tables hold: cycles, all-ones entries and tables outside memory end in a fault or an
//!   error, never a loop or a panic). It returns a [`Walked`]: the [`Translation`] and the flag
//!   updates it needs, written by [`Walked::commit`] only when the whole access succeeds
//!   (SDM Vol. 3A §4.8), each as a read-modify-write of the entry's current value: the walker
//!   never writes anything but accessed and dirty flags. [`translate`] is walk-and-commit over
//!   plain memory.
//! - **Precedence.** The walk stops at the first not-present entry or reserved-bit violation,
//!   top level first; rights are checked only once a page is found. So not-present and
//!   reserved-bit faults win over rights violations (in the SDM's words, P = 0 and RSVD = 1
//!   mean there is no translation, §4.7), and EPT misconfigurations and not-present entries
//!   win over EPT rights violations (Vol. 3C §29.3.3).
//! - **Memory.** Tables are read through [`Memory`] (`read_u32`/`read_u64`/`write_u32`/
//!   `write_u64` at a typed address, each a `Result`), or more generally [`TableMemory`], which
//!   lets the two-dimensional walk reach guest tables through EPT.
//! - **Typed addresses.** A format names its input and output address spaces with the
//!   newtypes of `x86::addr` ([`Address`]): guest paging takes a `Gva` and yields the physical
//!   type it is instantiated with (`Gpa` for a guest, `NGpa` for a nested guest, `Hpa` for the
//!   hardware's own paging); EPT01 is `Ept<Gpa, Hpa>`, EPT12 `Ept<NGpa, Gpa>`. Feeding a
//!   guest-physical address of the wrong level to an EPT walk does not compile:
//!
//!   ```compile_fail
//!   # use nestvisor_paging::*;
//!   # use x86::{Gpa, Hpa, NGpa, paging::Eptp};
//!   # fn f(ept01: &Ept<Gpa, Hpa>, mem: &mut impl Memory<Hpa>) {
//!   let access = EptAccess::new(AccessKind::Read, EptOrigin::NoLinear);
//!   // An L2 address given to EPT01: rejected, it needs a `Gpa`.
//!   let _ = translate(ept01, mem, NGpa::new(0x1000), access);
//!   # }
//!   ```
//! - **Results.** A [`Translation`] has the output address, the page and its size, the level
//!   and path of entries used (with their addresses, for shadow paging), the rights combined
//!   over every level (so that a TLB can cache them and re-check later accesses with
//!   [`PagingFormat::check`] without walking), the leaf attributes (global flag and PAT index,
//!   or EPT memory type and ignore-PAT) and whether the leaf is dirty. Faults are values:
//!   [`PageFault`] with the SDM's error code, [`EptFault`] with the violation's exit
//!   qualification or a misconfiguration.
//! - **Two dimensions.** [`translate_nested`] walks guest paging over EPT: every guest table
//!   access and the final guest-physical address go through EPT, and a failure says which
//!   dimension, which level, which guest-physical address and which kind of access
//!   ([`NestedFault`], [`EptStage`]).
//! - **Run-time mode.** [`PagingMode::from_registers`] says which mode CR0, CR4 and
//!   IA32_EFER select (SDM Vol. 3A Table 4-1); [`GuestPaging`] holds the format of that mode
//!   and dispatches once per walk to the monomorphised walker of the mode.
//! - **PAE.** The four PDPTEs are registers: [`load_pdptes`] reads and checks them (a reserved
//!   bit is #GP at load time, SDM Vol. 3A §4.4.1) and [`Pdptes::new`] checks the VMCS guest
//!   PDPTE fields; the [`Pae`] walk only reads them.
//!
//! # Tests
//!
//! Unit tests per format use hand-built tables for each fault kind and rule. Property tests
//! (`tests/`) compare every format, and the two-dimensional walk, with a naive reference written
//! separately from the SDM's tables (`tests/common/reference.rs`) on thousands of random tables,
//! accesses and contexts each, including the accessed/dirty side effects; `tests/malformed.rs`
//! feeds random bytes and checks that nothing panics, walks stay bounded and only A/D bits
//! change.
//!
//! # Example
//!
//! ```
//! use nestvisor_paging::{Access, AccessKind, Memory, MemoryError, Paging4, PagingContext};
//! use nestvisor_paging::{Privilege, translate};
//! use x86::{Gpa, Gva};
//!
//! /// 32 KiB of guest-physical memory.
//! struct Ram([u64; 4096]);
//!
//! impl Memory<Gpa> for Ram {
//!     fn read_u32(&mut self, a: Gpa) -> Result<u32, MemoryError<Gpa>> {
//!         let v = self.read_u64(Gpa::new(a.raw() & !7))?;
//!         Ok((v >> (8 * (a.raw() & 4))) as u32)
//!     }
//!     fn read_u64(&mut self, a: Gpa) -> Result<u64, MemoryError<Gpa>> {
//!         let i = usize::try_from(a.raw() / 8).map_err(|_| MemoryError { addr: a })?;
//!         self.0.get(i).copied().ok_or(MemoryError { addr: a })
//!     }
//!     fn write_u32(&mut self, a: Gpa, _: u32) -> Result<(), MemoryError<Gpa>> {
//!         Err(MemoryError { addr: a }) // 32-bit entries are not used here
//!     }
//!     fn write_u64(&mut self, a: Gpa, v: u64) -> Result<(), MemoryError<Gpa>> {
//!         let i = usize::try_from(a.raw() / 8).map_err(|_| MemoryError { addr: a })?;
//!         *self.0.get_mut(i).ok_or(MemoryError { addr: a })? = v;
//!         Ok(())
//!     }
//! }
//!
//! // PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000 mapping a 2-MiB page at 0x4000_0000.
//! let mut ram = Ram([0; 4096]);
//! ram.0[0x1000 / 8] = 0x2000 | 0b111; // present, writable, user
//! ram.0[0x2000 / 8] = 0x3000 | 0b111;
//! ram.0[0x3000 / 8] = 0x4000_0000 | 0b1000_0111; // PS = 1
//! let ctx = PagingContext::from_registers(1 << 31, 1 << 5, 1 << 10, 0, 46, true).unwrap();
//! let paging = Paging4::new(Gpa::new(0x1000), ctx);
//! let write = Access::new(AccessKind::Write, Privilege::User);
//! let t = translate(&paging, &mut ram, Gva::new(0x1234), write).unwrap();
//! assert_eq!(t.addr, Gpa::new(0x4000_1234));
//! assert!(t.dirty); // the write set D in the PDE, and A in all three entries
//! assert_eq!(ram.0[0x3000 / 8], 0x4000_0000 | 0b1110_0111);
//! ```
//!
//! Not implemented, and refused rather than ignored: protection keys (CR4.PKE/PKS) and
//! shadow-stack accesses (CR4.CET), see [`PagingContext::from_registers`]; EPT supervisor
//! shadow-stack control (EPTP bit 7), sub-page permissions, HLAT and advanced EPT-violation
//! exit information.

#![no_std]

mod ept;
mod guest;
mod legacy;
mod long;
mod memory;
mod mode;
mod nested;
mod pae;
mod walk;

#[cfg(test)]
mod test_utils;

pub use ept::{
    Ept, EptAccess, EptAttrs, EptCaps, EptFault, EptOrigin, EptRights, EptTranslation,
    EptViolation, InvalidEptp,
};
pub use guest::{
    Access, AccessKind, GuestTranslation, PageAttrs, PageFault, PageRights, PagingContext,
    Privilege, Unsupported,
};
pub use legacy::Paging32;
pub use long::{LongMode, Paging4, Paging5, QuickTranslation};
pub use memory::{Address, Direct, EntryWidth, Memory, MemoryError, TableMemory};
pub use mode::{GuestPaging, NoGuestPaging, PagingMode};
pub use nested::{EptSlot, EptStage, EptTables, NestedFault, NestedTranslation, translate_nested};
pub use pae::{Pae, PdpteLoadError, Pdptes, ReservedPdpte, load_pdptes};
pub use walk::{
    Decoded, Level, MAX_LEVELS, PageSize, PagingFormat, Path, Rights, Root, Step, TranslateResult,
    Translation, TranslationOf, WalkError, WalkResult, Walked, translate, walk,
};
