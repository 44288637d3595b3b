//! The paging-format trait and the one generic walk over it.
//!
//! Every paging mode of SDM Vol. 3A §4 and EPT (Vol. 3C §29.3) is the same algorithm: take the
//! root, index a table with some bits of the input address, read an entry, decide whether it is
//! not present, has a reserved bit set, references the next table or maps a page; combine the
//! access rights of the entries used; check the access against them once a page is found; set
//! the accessed flags of the entries used and the dirty flag of the leaf if the access
//! succeeded (§4.8, §29.3.5). [`PagingFormat`] is what differs between the modes; [`walk`] is
//! what does not. A walk visits at most one entry per level, so it ends after at most
//! [`MAX_LEVELS`] reads whatever the tables contain.

use core::fmt::Debug;

use crate::memory::{Address, Direct, EntryWidth, Memory, MemoryError, TableMemory};

/// A paging-structure level: 1 is the page table, 2 the page directory, 3 the PDPT, 4 the PML4,
/// 5 the PML5 (for 32-bit paging, 2 is the page directory).
pub type Level = u8;

/// The deepest walk of any format (5-level paging and 5-level EPT).
pub const MAX_LEVELS: usize = 5;

/// The size of the page a leaf entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB (a PTE).
    Size4K,
    /// 2 MiB (a PAE, 4-level or EPT PDE with PS = 1).
    Size2M,
    /// 4 MiB (a 32-bit PDE with PS = 1 and CR4.PSE = 1).
    Size4M,
    /// 1 GiB (a PDPTE with PS = 1, when 1-GiB pages are supported).
    Size1G,
}

impl PageSize {
    /// log2 of the size in bytes.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            Self::Size4K => 12,
            Self::Size2M => 21,
            Self::Size4M => 22,
            Self::Size1G => 30,
        }
    }

    /// The size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// Mask of the offset bits inside a page of this size.
    #[inline]
    pub const fn offset_mask(self) -> u64 {
        self.bytes() - 1
    }
}

/// Access rights granted by paging-structure entries; those of a translation are the
/// intersection over every entry used (SDM Vol. 3A §4.6, Vol. 3C §29.3.3.2).
pub trait Rights: Copy + Eq + Debug {
    /// Rights that restrict nothing: the start of the intersection.
    const ALL: Self;
    /// The rights granted by both `self` and `other`.
    fn intersect(self, other: Self) -> Self;
}

/// Where the top-level entry of a walk comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root<P> {
    /// Read it from the table at this address (CR3, EPTP).
    Table(P),
    /// It is already loaded in a register (the PAE PDPTEs): use this value, write nothing back.
    Register(u64),
}

/// What one paging-structure entry says, as decoded by a [`PagingFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<P, R> {
    /// Not present; `rights` are what the entry's rights bits say (EPT reports them in the
    /// violation's exit qualification; guest formats ignore them).
    NotPresent {
        /// Rights granted by this entry.
        rights: R,
    },
    /// Present with a reserved bit set (a #PF with RSVD = 1, or an EPT misconfiguration).
    Reserved,
    /// References the paging structure of the next level.
    Table {
        /// Address of the next table.
        table: P,
        /// Rights granted by this entry.
        rights: R,
    },
    /// Maps a page.
    Leaf {
        /// Address of the first byte of the page.
        page: P,
        /// Size of the page.
        size: PageSize,
        /// Rights granted by this entry.
        rights: R,
    },
}

/// One paging mode: how entries are found, decoded and checked.
///
/// Implemented by [`Paging32`](crate::Paging32), [`Pae`](crate::Pae),
/// [`Paging4`](crate::Paging4), [`Paging5`](crate::Paging5) and [`Ept`](crate::Ept). A value of
/// the format carries the root and the control bits that affect translation, so that the walk
/// itself takes nothing else.
pub trait PagingFormat {
    /// The address space translated (linear addresses, or guest-physical ones for EPT).
    type Input: Address;
    /// The address space produced, in which the paging structures also live.
    type Output: Address;
    /// What kind of access is being translated.
    type Access: Copy + Debug;
    /// The rights an entry grants.
    type Rights: Rights;
    /// Attributes of a leaf that are not rights (global flag, memory type).
    type Attrs: Copy + Debug + PartialEq + Eq;
    /// An architectural fault of this format (#PF, EPT violation or misconfiguration).
    type Fault: Copy + Debug + PartialEq + Eq;

    /// Width of the entries.
    const WIDTH: EntryWidth;

    /// The level of the top-level entry.
    fn top_level(&self) -> Level;
    /// Where the top-level entry for `input` comes from.
    fn root(&self, input: Self::Input) -> Root<Self::Output>;
    /// The address of the entry for `input` in the table at `table` of `level`.
    fn entry_addr(&self, table: Self::Output, input: Self::Input, level: Level) -> Self::Output;
    /// Decodes the entry `entry` found at `level`.
    fn decode(&self, level: Level, entry: u64) -> Decoded<Self::Output, Self::Rights>;
    /// The fault for a not-present entry at `level`; `rights` is the intersection of the rights
    /// of every entry used, this one included.
    fn not_present(&self, access: Self::Access, level: Level, rights: Self::Rights) -> Self::Fault;
    /// The fault for a reserved-bit violation at `level`.
    fn reserved(&self, access: Self::Access, level: Level) -> Self::Fault;
    /// Checks `access` against the combined rights of a complete translation whose leaf is at
    /// `level`.
    fn check(
        &self,
        access: Self::Access,
        rights: Self::Rights,
        level: Level,
    ) -> Result<(), Self::Fault>;
    /// The attributes of the leaf entry `leaf` mapping a page of `size`.
    fn attrs(&self, leaf: u64, size: PageSize) -> Self::Attrs;
    /// The flags to set in an entry used by a successful `access` (the accessed flag, and the
    /// dirty flag if `leaf` and the access writes); 0 when the format keeps no such flags.
    fn flags_to_set(&self, access: Self::Access, leaf: bool) -> u64;
    /// Whether a write through the leaf `leaf` needs no dirty-flag update (the flag is set, or
    /// the format keeps none).
    fn is_dirty(&self, leaf: u64) -> bool;
}

/// One entry used by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step<P> {
    /// Level of the entry.
    pub level: Level,
    /// Address of the entry, or `None` if it came from a register (PAE PDPTEs).
    pub addr: Option<P>,
    /// The entry as read, before any accessed or dirty flag was set.
    pub entry: u64,
}

/// The entries a walk used, top level first. Fixed capacity, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path<P> {
    steps: [Step<P>; MAX_LEVELS],
    len: u8,
}

impl<P: Copy> Path<P> {
    const fn new() -> Self {
        Self {
            steps: [Step {
                level: 0,
                addr: None,
                entry: 0,
            }; MAX_LEVELS],
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, step: Step<P>) {
        // The walk pushes once per level and never more than MAX_LEVELS levels exist; a full
        // path is left as it is rather than indexed out of bounds.
        if let Some(slot) = self.steps.get_mut(usize::from(self.len)) {
            *slot = step;
            self.len += 1;
        }
    }

    /// The entries used, top level first.
    #[inline]
    pub fn steps(&self) -> &[Step<P>] {
        &self.steps[..usize::from(self.len)]
    }

    /// The last entry used (the leaf of a successful walk).
    #[inline]
    pub fn last(&self) -> Option<&Step<P>> {
        self.steps().last()
    }
}

/// A successful translation into the address space `P`, with rights `R` and leaf attributes
/// `A`. Every guest-paging format yields a [`GuestTranslation`](crate::GuestTranslation), EPT
/// an [`EptTranslation`](crate::EptTranslation); [`TranslationOf`](crate::TranslationOf) names it from a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation<P, R, A> {
    /// The translated address of the accessed byte.
    pub addr: P,
    /// The first byte of the page.
    pub page: P,
    /// The size of the page.
    pub size: PageSize,
    /// The level of the leaf entry.
    pub level: Level,
    /// The rights of the translation: the intersection over every entry used. A TLB caches them
    /// and re-checks later accesses with [`PagingFormat::check`] without walking.
    pub rights: R,
    /// Attributes of the leaf.
    pub attrs: A,
    /// Whether writes through this translation need no dirty-flag update, after the flags of
    /// this access were set. A TLB that caches a translation with `dirty == false` must walk
    /// again on a write, as hardware does (SDM Vol. 3A §4.8).
    pub dirty: bool,
    /// The entries used, as read.
    pub path: Path<P>,
}

/// The translation a format produces.
pub type TranslationOf<F> = Translation<
    <F as PagingFormat>::Output,
    <F as PagingFormat>::Rights,
    <F as PagingFormat>::Attrs,
>;

impl<P: Copy, R, A> Translation<P, R, A> {
    /// The address of the leaf entry (`None` only for a leaf held in a register, which no
    /// format has).
    #[inline]
    pub fn leaf_addr(&self) -> Option<P> {
        self.path.last().and_then(|s| s.addr)
    }
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError<F, E> {
    /// The architecture says the access faults.
    Fault(F),
    /// A paging structure could not be read or written (unbacked memory, or in a
    /// two-dimensional walk, the EPT fault of the access to it).
    Table(E),
}

/// What [`walk`] returns.
pub type WalkResult<F, T> = Result<
    Walked<F, <T as TableMemory<<F as PagingFormat>::Output>>::Slot>,
    WalkError<<F as PagingFormat>::Fault, <T as TableMemory<<F as PagingFormat>::Output>>::Error>,
>;

/// What [`translate`] returns.
pub type TranslateResult<F> = Result<
    TranslationOf<F>,
    WalkError<<F as PagingFormat>::Fault, MemoryError<<F as PagingFormat>::Output>>,
>;

/// A flag update of a successful walk, waiting to be written.
#[derive(Clone, Copy, Debug)]
struct Update<S> {
    slot: S,
    flags: u64,
}

/// The flag updates a walk noted, one place per entry of its path (top level first).
#[derive(Clone, Copy, Debug)]
struct Updates<S>([Option<Update<S>>; MAX_LEVELS]);

impl<S: Copy> Updates<S> {
    #[inline]
    fn new() -> Self {
        Self([None; MAX_LEVELS])
    }

    /// Notes that the entry at `index` of the path, read through `slot`, lacks the flags
    /// `missing` (nothing to write if none, or if the entry came from a register).
    #[inline]
    fn note(&mut self, index: usize, slot: Option<S>, missing: u64) {
        if let (true, Some(slot), Some(update)) = (missing != 0, slot, self.0.get_mut(index)) {
            *update = Some(Update {
                slot,
                flags: missing,
            });
        }
    }

    /// Checks that every update may be written.
    #[inline]
    fn check<A: Address, T>(&self, tables: &mut T) -> Result<(), T::Error>
    where
        T: TableMemory<A, Slot = S>,
    {
        for update in self.0.iter().flatten() {
            tables.check_write(update.slot)?;
        }
        Ok(())
    }

    /// Checks and then sets the flags, top level first (each by read-modify-write of the
    /// entry's current value).
    #[inline]
    fn commit<A: Address, T>(&self, tables: &mut T, width: EntryWidth) -> Result<(), T::Error>
    where
        T: TableMemory<A, Slot = S>,
    {
        self.check(tables)?;
        for update in self.0.iter().flatten() {
            tables.set_flags(update.slot, width, update.flags)?;
        }
        Ok(())
    }
}

/// A walk that found a permitted translation, with its accessed/dirty flag updates not yet
/// written. [`Walked::commit`] writes them; a two-dimensional walk first translates the final
/// address, so that a failure there leaves the guest's flags untouched.
#[derive(Clone, Copy, Debug)]
pub struct Walked<F: PagingFormat, S> {
    translation: TranslationOf<F>,
    updates: Updates<S>,
}

impl<F: PagingFormat, S: Copy> Walked<F, S> {
    /// The translation (its `dirty` already counts the pending updates).
    #[inline]
    pub fn translation(&self) -> &TranslationOf<F> {
        &self.translation
    }

    /// Checks that every pending flag update may be written (an EPT-write check in a
    /// two-dimensional walk).
    #[inline]
    pub fn check_updates<T>(&self, tables: &mut T) -> Result<(), T::Error>
    where
        T: TableMemory<F::Output, Slot = S>,
    {
        self.updates.check(tables)
    }

    /// Checks and then sets the flags, top level first (each by read-modify-write of the
    /// entry's current value), and returns the translation.
    #[inline]
    pub fn commit<T>(self, tables: &mut T) -> Result<TranslationOf<F>, T::Error>
    where
        T: TableMemory<F::Output, Slot = S>,
    {
        self.updates.commit(tables, F::WIDTH)?;
        Ok(self.translation)
    }
}

/// Walks `format`'s tables for `input` and checks `access`, without writing anything.
///
/// Entries are read through `tables`. On success the returned [`Walked`] holds the translation
/// and the accessed/dirty flag updates the access requires; nothing has been written yet.
#[inline]
pub fn walk<F, T>(
    format: &F,
    tables: &mut T,
    input: F::Input,
    access: F::Access,
) -> WalkResult<F, T>
where
    F: PagingFormat,
    T: TableMemory<F::Output>,
{
    let mut updates = Updates::new();
    let translation = walk_noting(format, tables, input, access, &mut updates)?;
    Ok(Walked {
        translation,
        updates,
    })
}

/// The walk: returns the translation and notes in `updates` the accessed/dirty flags the
/// access sets where they are still clear (A in every entry with an address, not the PAE PDPTE
/// registers; D in the leaf on a write). The translation is returned on its own so that
/// [`translate`] can hand it on without moving it.
#[inline]
fn walk_noting<F, T>(
    format: &F,
    tables: &mut T,
    input: F::Input,
    access: F::Access,
    updates: &mut Updates<T::Slot>,
) -> Result<TranslationOf<F>, WalkError<F::Fault, T::Error>>
where
    F: PagingFormat,
    T: TableMemory<F::Output>,
{
    let mut level = format.top_level();
    let mut path = Path::new();
    let table_flags = format.flags_to_set(access, false);
    let mut rights = F::Rights::ALL;

    let (mut entry, mut addr, mut slot) = match format.root(input) {
        Root::Register(entry) => (entry, None, None),
        Root::Table(table) => {
            let at = format.entry_addr(table, input, level);
            let (entry, slot) = tables
                .read_entry(at, F::WIDTH, level)
                .map_err(WalkError::Table)?;
            (entry, Some(at), Some(slot))
        }
    };

    loop {
        let index = path.steps().len();
        path.push(Step { level, addr, entry });
        match format.decode(level, entry) {
            Decoded::NotPresent { rights: r } => {
                let fault = format.not_present(access, level, rights.intersect(r));
                return Err(WalkError::Fault(fault));
            }
            Decoded::Reserved => return Err(WalkError::Fault(format.reserved(access, level))),
            Decoded::Table { table, rights: r } => {
                rights = rights.intersect(r);
                // A format never reports a table at level 1 or at a level past its top; treat
                // such a decode as a reserved-bit violation instead of walking on.
                if level <= 1 || path.steps().len() >= MAX_LEVELS {
                    return Err(WalkError::Fault(format.reserved(access, level)));
                }
                updates.note(index, slot, table_flags & !entry);
                level -= 1;
                let at = format.entry_addr(table, input, level);
                let (next, next_slot) = tables
                    .read_entry(at, F::WIDTH, level)
                    .map_err(WalkError::Table)?;
                entry = next;
                addr = Some(at);
                slot = Some(next_slot);
            }
            Decoded::Leaf {
                page,
                size,
                rights: r,
            } => {
                rights = rights.intersect(r);
                format
                    .check(access, rights, level)
                    .map_err(WalkError::Fault)?;
                let leaf_flags = format.flags_to_set(access, true);
                updates.note(index, slot, leaf_flags & !entry);
                let offset = input.to_raw() & size.offset_mask();
                return Ok(Translation {
                    addr: F::Output::from_raw(page.to_raw() | offset),
                    page,
                    size,
                    level,
                    rights,
                    attrs: format.attrs(entry, size),
                    dirty: format.is_dirty(entry | leaf_flags),
                    path,
                });
            }
        }
    }
}

/// Translates `input` for `access` through tables in plain memory, setting accessed and dirty
/// flags if the access succeeds: the one-dimensional walk.
#[inline]
pub fn translate<F, M>(
    format: &F,
    memory: &mut M,
    input: F::Input,
    access: F::Access,
) -> TranslateResult<F>
where
    F: PagingFormat,
    M: Memory<F::Output> + ?Sized,
{
    let mut tables = Direct(memory);
    let mut updates = Updates::new();
    // The result goes back as it came (no copy of the translation): only the updates are
    // written in between.
    let result = walk_noting(format, &mut tables, input, access, &mut updates);
    if result.is_ok() {
        updates
            .commit(&mut tables, F::WIDTH)
            .map_err(WalkError::Table)?;
    }
    result
}
