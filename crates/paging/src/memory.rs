//! Typed addresses and the memory through which paging structures are read and written.
//!
//! A walk reads paging-structure entries and, when the access succeeds, writes accessed and
//! dirty flags back (SDM Vol. 3A §4.8, Vol. 3C §29.3.5). The walker does this through
//! [`Memory`], a four-method trait over one address space, so that the hardware model (its RAM
//! and buses) and the hypervisor (its guests' memory) can both walk. Every method returns a
//! `Result`: an address with no memory behind it is a [`MemoryError`], never a panic.
//!
//! [`Address`] is implemented by the four address newtypes of `x86::addr` and by nothing else,
//! so that a format can say which space it translates from and which it produces.

use core::fmt::Debug;
use core::hash::Hash;

use x86::{Gpa, Gva, Hpa, NGpa};

use crate::walk::Level;

mod sealed {
    pub trait Sealed {}
    impl Sealed for x86::Gva {}
    impl Sealed for x86::Gpa {}
    impl Sealed for x86::NGpa {}
    impl Sealed for x86::Hpa {}
}

/// One of the address newtypes ([`Gva`], [`Gpa`], [`NGpa`], [`Hpa`]). Sealed: the walker
/// relies on these being plain 64-bit values.
pub trait Address: sealed::Sealed + Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// Wraps a raw 64-bit value.
    fn from_raw(raw: u64) -> Self;
    /// The raw 64-bit value.
    fn to_raw(self) -> u64;
}

macro_rules! impl_address {
    ($($ty:ty),*) => {$(
        impl Address for $ty {
            #[inline]
            fn from_raw(raw: u64) -> Self {
                <$ty>::new(raw)
            }
            #[inline]
            fn to_raw(self) -> u64 {
                self.raw()
            }
        }
    )*};
}
impl_address!(Gva, Gpa, NGpa, Hpa);

/// An access to an address with nothing behind it (or that the memory refuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryError<A> {
    /// The address of the failed access.
    pub addr: A,
}

/// Memory in the address space `A`, as the page walker sees it.
///
/// Accesses are naturally aligned (the walker only reads 4- and 8-byte entries at multiples of
/// their size) and little-endian.
pub trait Memory<A: Address> {
    /// Reads 4 bytes at `addr`.
    fn read_u32(&mut self, addr: A) -> Result<u32, MemoryError<A>>;
    /// Reads 8 bytes at `addr`.
    fn read_u64(&mut self, addr: A) -> Result<u64, MemoryError<A>>;
    /// Writes 4 bytes at `addr`.
    fn write_u32(&mut self, addr: A, value: u32) -> Result<(), MemoryError<A>>;
    /// Writes 8 bytes at `addr`.
    fn write_u64(&mut self, addr: A, value: u64) -> Result<(), MemoryError<A>>;
}

impl<A: Address, M: Memory<A> + ?Sized> Memory<A> for &mut M {
    #[inline]
    fn read_u32(&mut self, addr: A) -> Result<u32, MemoryError<A>> {
        (**self).read_u32(addr)
    }
    #[inline]
    fn read_u64(&mut self, addr: A) -> Result<u64, MemoryError<A>> {
        (**self).read_u64(addr)
    }
    #[inline]
    fn write_u32(&mut self, addr: A, value: u32) -> Result<(), MemoryError<A>> {
        (**self).write_u32(addr, value)
    }
    #[inline]
    fn write_u64(&mut self, addr: A, value: u64) -> Result<(), MemoryError<A>> {
        (**self).write_u64(addr, value)
    }
}

/// The width of a paging-structure entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryWidth {
    /// 4-byte entries (32-bit paging).
    U32,
    /// 8-byte entries (PAE, 4-level, 5-level paging and EPT).
    U64,
}

impl EntryWidth {
    /// The entry size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        match self {
            Self::U32 => 4,
            Self::U64 => 8,
        }
    }
}

/// Where a walk reads its paging-structure entries and writes their A/D flags.
///
/// For a one-dimensional walk this is plain [`Memory`] (see [`Direct`]); for the
/// two-dimensional walk it is guest-physical memory reached through an EPT walk, whose failures
/// are EPT violations and misconfigurations. `Slot` remembers where an entry was read so that
/// the A/D update writes the same place without translating again.
pub trait TableMemory<A: Address> {
    /// Why an entry could not be read or written.
    type Error;
    /// Where an entry was found.
    type Slot: Copy + Debug;
    /// Reads the entry of paging-structure level `level` at `addr`.
    fn read_entry(
        &mut self,
        addr: A,
        width: EntryWidth,
        level: Level,
    ) -> Result<(u64, Self::Slot), Self::Error>;
    /// Checks, before any flag is written, that the entry read through `slot` may be written.
    fn check_write(&mut self, slot: Self::Slot) -> Result<(), Self::Error>;
    /// Sets `flags` in the entry read through `slot`, as a read-modify-write of its current
    /// value (like the processor's locked update), writing only if a flag was clear.
    fn set_flags(
        &mut self,
        slot: Self::Slot,
        width: EntryWidth,
        flags: u64,
    ) -> Result<(), Self::Error>;
}

/// Sets `flags` in the entry at `addr` of `memory` by read-modify-write.
pub(crate) fn set_flags_at<A: Address, M: Memory<A> + ?Sized>(
    memory: &mut M,
    addr: A,
    width: EntryWidth,
    flags: u64,
) -> Result<(), MemoryError<A>> {
    match width {
        EntryWidth::U32 => {
            let old = memory.read_u32(addr)?;
            // Flags of 4-byte entries are in the low 32 bits: the truncation is exact.
            let new = old | flags as u32;
            if new != old {
                memory.write_u32(addr, new)?;
            }
        }
        EntryWidth::U64 => {
            let old = memory.read_u64(addr)?;
            let new = old | flags;
            if new != old {
                memory.write_u64(addr, new)?;
            }
        }
    }
    Ok(())
}

/// [`TableMemory`] over plain [`Memory`]: entries are read and written where they are.
#[derive(Debug)]
pub struct Direct<'a, M: ?Sized>(pub &'a mut M);

impl<A: Address, M: Memory<A> + ?Sized> TableMemory<A> for Direct<'_, M> {
    type Error = MemoryError<A>;
    type Slot = A;

    #[inline]
    fn read_entry(
        &mut self,
        addr: A,
        width: EntryWidth,
        _level: Level,
    ) -> Result<(u64, A), MemoryError<A>> {
        let value = match width {
            EntryWidth::U32 => u64::from(self.0.read_u32(addr)?),
            EntryWidth::U64 => self.0.read_u64(addr)?,
        };
        Ok((value, addr))
    }

    #[inline]
    fn check_write(&mut self, _slot: A) -> Result<(), MemoryError<A>> {
        Ok(())
    }

    #[inline]
    fn set_flags(&mut self, slot: A, width: EntryWidth, flags: u64) -> Result<(), MemoryError<A>> {
        set_flags_at(&mut *self.0, slot, width, flags)
    }
}
