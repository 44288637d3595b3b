//! The translation lookaside buffer (SDM Vol. 3A §4.10), tagged for VMX by VPID and EPT
//! (Vol. 3C §29.1 "Virtual Processor Identifiers", §29.4 "Caching Translation Information").
//!
//! A direct-mapped cache of 4-KiB translations indexed by the linear page number and the
//! context it was filled under, so that translations of several address spaces live side by
//! side (§4.10.1): a context moves every page of its address space to its own offset in the
//! cache, and the same page under two contexts takes two slots. A context ([`ctx`]) is one
//! 32-bit word: the PCID, the VPID, a small number standing for the EP4TA of the EPT in use
//! (bits 51:12 of the EPTP; 0 when EPT is off) and a bit for guest-physical mappings. So the
//! three kinds of cached mapping of §29.4.1 are: linear mappings (EPT off: VPID and PCID),
//! combined mappings (EPT on and guest paging on: EP4TA, VPID and PCID) and guest-physical
//! mappings (EPT on and guest paging off, where linear = guest-physical: EP4TA only). VMX root
//! operation is VPID 0 without EPT, the context 0 of a processor without VMX.
//!
//! Global translations (§4.10.2.4) are used whatever the PCID (but only in their own VPID and
//! EP4TA), so they live at the slot of their context with PCID 0 and a lookup that misses its
//! own slot looks there too. A hit is a compare of the page number and the context word (as
//! cheap as the PCID compare it replaces) and a permission check against the cached rights;
//! the entry remembers where the frame lives in RAM so that the access is a slice index. Large
//! pages are cached one 4-KiB fragment at a time and remember their size, so INVLPG drops every
//! fragment of the page (§4.10.2.3).
//!
//! Invalidation follows §4.10.4 within the current VPID, as §29.4.3.1 requires ("only for the
//! current VPID, but, for combined mappings, all EP4TAs"): INVLPG, MOV to CR3 (all non-global
//! entries of the new PCID, or none with the no-flush bit), global entries survive unless
//! CR4.PGE changes, INVPCID types 0–3, and changes of the paging bits of CR0/CR4 drop the
//! current VPID's linear and combined mappings. INVEPT drops the guest-physical and combined
//! mappings of one EP4TA or of all; INVVPID the linear and combined mappings of one address,
//! of one VPID (with or without its globals) or of every VPID but 0 (§31.3); without VPIDs, VM
//! entry and VM exit drop VPID 0's (§29.1.3). Nothing is flushed at VM entry or exit with
//! VPIDs enabled: a hypervisor that forgets INVVPID sees stale translations, as on silicon. A
//! flush walks the list of live entries, so it costs what is live, not the size of the cache;
//! dropping the entry of one address (after a fault, §4.10.4.1 and §29.4.3.1) costs two slots.

/// Number of entries (a power of two).
const ENTRIES: usize = 1024;

/// How far apart the slots of one page under consecutive PCIDs are: about `ENTRIES / φ` and
/// odd, so that the address spaces of consecutive PCIDs start far apart and the first
/// `ENTRIES` PCIDs each start at a slot of their own.
const SPREAD: usize = (ENTRIES * 618 / 1000) | 1;

/// The fields of a context word.
pub(crate) mod ctx {
    /// Bits 11:0: the PCID (0 unless CR4.PCIDE = 1).
    pub const PCID: u32 = 0xfff;
    /// Bits 27:12: the VPID (0 in root operation and without "enable VPID").
    pub const VPID_SHIFT: u32 = 12;
    /// Mask of the VPID field.
    pub const VPID: u32 = 0xffff << VPID_SHIFT;
    /// Bits 30:28: the EPT number, standing for one EP4TA (0: EPT not in use).
    pub const EPT_SHIFT: u32 = 28;
    /// Mask of the EPT number.
    pub const EPT: u32 = 0x7 << EPT_SHIFT;
    /// Bit 31: a guest-physical mapping (EPT on, guest paging off): tagged by EP4TA only.
    pub const GUEST_PHYSICAL: u32 = 1 << 31;
}

/// How many EP4TAs can have mappings cached at once (EPT numbers 1..=EPT_CONTEXTS).
const EPT_CONTEXTS: usize = 7;

/// Where the slots of context `c` start: its PCID spread plus a mix of its VMX part (0 for the
/// VMX part of root operation, so that root operation indexes exactly as without VMX).
#[inline]
fn offset(c: u32) -> usize {
    let vmx = c & !ctx::PCID;
    let mixed = (vmx.wrapping_mul(0x9e37_79b9) >> 22) as usize;
    mixed.wrapping_add(((c & ctx::PCID) as usize).wrapping_mul(SPREAD))
}

/// The slot of linear page `vpn` in context `c`.
#[inline]
fn slot(vpn: u64, c: u32) -> usize {
    (vpn as usize).wrapping_add(offset(c)) & (ENTRIES - 1)
}

/// The VPID field of a context word.
#[inline]
const fn vpid_of(c: u32) -> u16 {
    ((c & ctx::VPID) >> ctx::VPID_SHIFT) as u16
}

/// The EPT number of a context word.
#[inline]
const fn ept_of(c: u32) -> u32 {
    (c & ctx::EPT) >> ctx::EPT_SHIFT
}

/// Permission bits cached with a translation (the combination over all levels, §4.6, and of
/// EPT, §29.3.3.2).
#[allow(missing_docs)]
pub(crate) mod perm {
    /// User-mode accessible (U/S = 1 at every level).
    pub const USER: u8 = 1 << 0;
    /// Writable (R/W = 1 at every level).
    pub const WRITE: u8 = 1 << 1;
    /// Executable (no XD bit set at any level, or EFER.NXE = 0; and EPT execute access).
    pub const EXEC: u8 = 1 << 2;
    /// Writes need no walk: the dirty flag of the final entry is set (and with EPT, the EPT
    /// leaf allows writes and, with EPT A/D, is dirty).
    pub const DIRTY: u8 = 1 << 3;
}

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Linear page number + 1 (0 = empty slot, [`DEAD`] = dropped but still listed as live).
    pub vpn1: u64,
    /// Physical frame number (host-physical with EPT).
    pub frame: u64,
    /// Byte offset of the frame in RAM, or `usize::MAX` for MMIO / unbacked.
    pub ram: usize,
    /// The context the entry was filled under ([`ctx`]); PCID bits clear for global entries.
    pub ctx: u32,
    /// Global translation (G = 1 and CR4.PGE = 1 when it was filled).
    pub global: bool,
    /// log2 of the page size (12, 21, 22 or 30).
    pub page_shift: u8,
    /// [`perm`] bits.
    pub perm: u8,
}

/// `vpn1` of a slot emptied without leaving the live list (it matches no page).
const DEAD: u64 = u64::MAX;

impl Entry {
    /// The first linear page number of the page this entry is a fragment of, shifted to the
    /// page size (for the flushes by address).
    #[inline]
    fn covers(&self, lin: u64) -> bool {
        let page = ((self.vpn1.wrapping_sub(1)) << 12) >> self.page_shift;
        page == lin >> self.page_shift
    }

    /// A linear or combined mapping of `vpid` (not a guest-physical one).
    #[inline]
    fn linear_of(&self, vpid: u16) -> bool {
        self.ctx & (ctx::GUEST_PHYSICAL | ctx::VPID) == u32::from(vpid) << ctx::VPID_SHIFT
    }
}

const EMPTY: Entry = Entry {
    vpn1: 0,
    frame: 0,
    ram: usize::MAX,
    ctx: 0,
    global: false,
    page_shift: 12,
    perm: 0,
};

/// Data pages: a small direct-mapped cache in front of the TLB for the common data access, a
/// read or write of RAM within one page by an explicit access (QEMU's softmmu fast path plays
/// the same part). It holds only translations whose rights cannot depend on anything but the
/// CPL and the page's own bits: a supervisor access to a user page (SMAP and EFLAGS.AC) and
/// CPL 3 with CR0.AM (alignment checks) are never cached, and a write needs R/W = 1 and the
/// dirty flag already set. Every entry is valid under one key, the TLB generation (every
/// invalidation and context change), CR3 (PCID switches without a flush), CR0 and the CPL:
/// a fill under another key starts a new epoch, which drops every entry at once. So it
/// caches nothing the TLB could not, and stops at the same invalidations.
///
/// As in QEMU's softmmu TLB, an entry holds a tag for reads and one for writes (the linear
/// page with the epoch in its low 12 bits; 0 when not allowed) and an addend from linear
/// address to RAM offset. A lookup compares the tag of the access's *last* byte with the
/// entry of its first byte's page, so one comparison checks the page, the epoch, the right
/// and that the access stays within the page.
#[derive(Clone, Debug)]
pub(crate) struct DataPages {
    entries: [DataPage; DATA_PAGES],
    /// 1..=`EPOCH_MASK`: never 0, so that no tag is 0 and an empty entry matches nothing.
    epoch: u64,
    key: (u64, u64, u64, u8),
}

const DATA_PAGES: usize = 64;

/// The epoch lives in a tag's page-offset bits.
const EPOCH_MASK: u64 = 0xfff;

#[derive(Clone, Copy, Debug, Default)]
struct DataPage {
    /// Linear page | epoch, for reads (0: empty).
    read: u64,
    /// The same for writes (0: not writable).
    write: u64,
    /// RAM offset of the page minus its linear address (wrapping).
    addend: u64,
}

impl DataPages {
    pub fn new() -> Self {
        Self {
            entries: [DataPage::default(); DATA_PAGES],
            epoch: 1,
            key: (u64::MAX, 0, 0, 0),
        }
    }

    /// The RAM offset of linear `lin` for a read (or a write) of `size` bytes within one
    /// page, if cached under `key` (TLB generation, CR3, CR0, CPL).
    #[inline(always)]
    pub fn find(
        &self,
        lin: u64,
        size: usize,
        write: bool,
        key: (u64, u64, u64, u8),
    ) -> Option<usize> {
        if self.key != key {
            return None;
        }
        self.find_synced(lin, size, write)
    }

    /// Makes `key` the key the entries are valid under, dropping them all if it is another.
    /// Blocks call this when they start and after every instruction that might change the
    /// key, so that their loads and stores can use [`DataPages::find_synced`].
    #[inline(always)]
    pub fn sync(&mut self, key: (u64, u64, u64, u8)) {
        if self.key != key {
            self.key = key;
            self.next_epoch();
        }
    }

    /// A new epoch; when the epochs run out, the entries are cleared and they start again.
    #[cold]
    fn next_epoch(&mut self) {
        self.epoch += 1;
        if self.epoch > EPOCH_MASK {
            self.entries = [DataPage::default(); DATA_PAGES];
            self.epoch = 1;
        }
    }

    /// The RAM offset of an access of `size` (1 to 8) bytes at linear `lin` for a read (or a
    /// write), if it stays within one cached page; valid only while the key is the one last
    /// passed to [`DataPages::sync`], which the caller vouches for.
    #[inline(always)]
    pub fn find_synced(&self, lin: u64, size: usize, write: bool) -> Option<usize> {
        let e = &self.entries[(lin >> 12) as usize & (DATA_PAGES - 1)];
        // The last byte's page: another page than the first's (whose entry this is) never
        // matches, since an entry's tag is its own page.
        let tag = (lin.wrapping_add((size as u64).saturating_sub(1)) & !0xfff) | self.epoch;
        let have = if write { e.write } else { e.read };
        (have == tag).then(|| lin.wrapping_add(e.addend) as usize)
    }

    /// Caches the page of `lin` at RAM offset `ram` (its page) under `key`.
    pub fn fill(&mut self, lin: u64, ram: usize, writable: bool, key: (u64, u64, u64, u8)) {
        self.sync(key);
        let page = lin & !0xfff;
        let tag = page | self.epoch;
        self.entries[(lin >> 12) as usize & (DATA_PAGES - 1)] = DataPage {
            read: tag,
            write: if writable { tag } else { 0 },
            addend: (ram as u64).wrapping_sub(page),
        };
    }
}

/// The TLB.
#[derive(Debug)]
pub(crate) struct Tlb {
    entries: Vec<Entry>,
    /// Slots that may be non-empty.
    live: Vec<u16>,
    /// Bumped by every invalidation and context change, so that derived caches (the fetch page)
    /// know when to drop.
    generation: u64,
    /// The VMX part of the current context (VPID and EPT number; PCID bits clear).
    base: u32,
    /// `offset(base)`.
    base_offset: usize,
    /// The EP4TA each EPT number stands for (index = number − 1).
    ep4tas: [Option<u64>; EPT_CONTEXTS],
    /// The EPT number to recycle next when all are taken.
    victim: usize,
    /// Whether the context was set for VMX non-root operation.
    non_root: bool,
}

impl Tlb {
    pub fn new() -> Self {
        Self {
            entries: vec![EMPTY; ENTRIES],
            live: Vec::with_capacity(ENTRIES),
            generation: 0,
            base: 0,
            base_offset: 0,
            ep4tas: [None; EPT_CONTEXTS],
            victim: 0,
            non_root: false,
        }
    }

    /// The context of the current VPID and EPT with `pcid`.
    #[inline]
    pub fn context(&self, pcid: u16) -> u32 {
        self.base | u32::from(pcid)
    }

    /// The context of guest-physical mappings of the current EPT (guest paging off).
    #[inline]
    pub fn guest_physical_context(&self) -> u32 {
        (self.base & ctx::EPT) | ctx::GUEST_PHYSICAL
    }

    /// The VPID of the current context.
    #[inline]
    pub fn vpid(&self) -> u16 {
        vpid_of(self.base)
    }

    /// Whether the current context was set for VMX non-root operation.
    #[inline]
    pub fn non_root(&self) -> bool {
        self.non_root
    }

    /// Makes `vpid` and the EPT with top table `ep4ta` (`None`: EPT off) the current context,
    /// for non-root operation or not. An EP4TA without an EPT number takes a free one, or the
    /// next in turn, whose mappings are dropped first.
    pub fn set_context(&mut self, non_root: bool, vpid: u16, ep4ta: Option<u64>) {
        self.generation += 1;
        let ept = match ep4ta {
            None => 0,
            Some(root) => self.ept_number(root),
        };
        self.base = (u32::from(vpid) << ctx::VPID_SHIFT) | (ept << ctx::EPT_SHIFT);
        self.base_offset = offset(self.base);
        self.non_root = non_root;
    }

    /// The EPT number of `ep4ta`, assigned if it has none.
    fn ept_number(&mut self, ep4ta: u64) -> u32 {
        let known = self.ep4tas.iter().position(|&e| e == Some(ep4ta));
        let free = || self.ep4tas.iter().position(Option::is_none);
        let index = match known.or_else(free) {
            Some(i) => i,
            None => {
                let i = self.victim % EPT_CONTEXTS;
                self.victim = (i + 1) % EPT_CONTEXTS;
                let number = i as u32 + 1;
                self.retain(|e| ept_of(e.ctx) != number);
                i
            }
        };
        if let Some(slot) = self.ep4tas.get_mut(index) {
            *slot = Some(ep4ta);
        }
        index as u32 + 1
    }

    /// The entry for `lin` under `pcid` in the current VPID and EPT, if cached: in the
    /// context's own slot, or a global one in the slot of its PCID-0 context.
    #[inline]
    pub fn lookup(&self, lin: u64, pcid: u16) -> Option<&Entry> {
        let vpn = lin >> 12;
        let c = self.base | u32::from(pcid);
        let base_slot = (vpn as usize).wrapping_add(self.base_offset);
        let own = &self.entries
            [base_slot.wrapping_add(usize::from(pcid).wrapping_mul(SPREAD)) & (ENTRIES - 1)];
        if own.vpn1 == vpn + 1 && own.ctx == c {
            return Some(own);
        }
        let global = &self.entries[base_slot & (ENTRIES - 1)];
        (global.vpn1 == vpn + 1 && global.global && global.ctx == self.base).then_some(global)
    }

    /// The guest-physical mapping of `gpa` under the current EPT (guest paging off), if
    /// cached.
    #[inline]
    pub fn lookup_guest_physical(&self, gpa: u64) -> Option<&Entry> {
        let vpn = gpa >> 12;
        let c = self.guest_physical_context();
        let e = &self.entries[slot(vpn, c)];
        (e.vpn1 == vpn + 1 && e.ctx == c).then_some(e)
    }

    /// Caches a translation for the context it was filled under (`entry.ctx`), evicting
    /// whatever shared its slot. The generation stays: an eviction invalidates nothing, and a
    /// translation derived from the evicted entry (the fetch page) may still be used until
    /// something invalidates it (§4.10.2.2: a processor may cache translations in more than
    /// one structure).
    pub fn insert(&mut self, lin: u64, entry: Entry) {
        let vpn = lin >> 12;
        let entry = Entry {
            vpn1: vpn + 1,
            ..entry
        };
        let c = entry.ctx;
        let own = slot(vpn, c);
        if !entry.global {
            self.fill(own, entry);
            return;
        }
        // An older translation of the page in the context's own slot would be found before
        // the global slot: it goes.
        let old = &mut self.entries[own];
        if old.vpn1 == vpn + 1 && old.ctx == c {
            old.vpn1 = DEAD;
        }
        let shared = c & !ctx::PCID;
        self.fill(
            slot(vpn, shared),
            Entry {
                ctx: shared,
                ..entry
            },
        );
    }

    fn fill(&mut self, slot: usize, entry: Entry) {
        if self.entries[slot].vpn1 == 0 {
            self.live.push(slot as u16);
        }
        self.entries[slot] = entry;
    }

    /// Changes with every flush, dropped address and context switch.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        self.generation += 1;
        let entries = &mut self.entries;
        self.live.retain(|&slot| {
            let e = &mut entries[slot as usize];
            if e.vpn1 != 0 && (e.vpn1 == DEAD || !keep(e)) {
                *e = EMPTY;
            }
            e.vpn1 != 0
        });
    }

    // --- flushes of the current VPID (§4.10.4 as §29.4.3.1 restricts them) -----------------

    /// Drops everything, global entries, every VPID and every EPT included (RESET, a loader's
    /// state change).
    pub fn flush_all(&mut self) {
        self.retain(|_| false);
    }

    /// Drops every linear and combined mapping of the current VPID, global ones included
    /// (changes of the paging bits of CR0 and CR4; INVPCID type 2).
    pub fn flush_current(&mut self) {
        let vpid = self.vpid();
        self.retain(|e| !e.linear_of(vpid));
    }

    /// Drops every non-global entry of the current VPID (MOV to CR3 without PCIDs; INVPCID
    /// type 3).
    pub fn flush_non_global(&mut self) {
        let vpid = self.vpid();
        self.retain(|e| e.global || !e.linear_of(vpid));
    }

    /// Drops the non-global entries of `pcid` in the current VPID (MOV to CR3 with PCIDs;
    /// INVPCID type 1).
    pub fn flush_pcid(&mut self, pcid: u16) {
        let vpid = self.vpid();
        let pcid = u32::from(pcid);
        self.retain(|e| e.global || !e.linear_of(vpid) || e.ctx & ctx::PCID != pcid);
    }

    /// INVLPG: drops the entries of the page containing `lin` in the current VPID, for every
    /// PCID and global ones too (§4.10.4.1), whatever the size of that page.
    pub fn flush_page(&mut self, lin: u64) {
        let vpid = self.vpid();
        self.flush_vpid_page(vpid, lin);
    }

    /// INVPCID type 0: the entries for `lin` tagged with `pcid` in the current VPID (global
    /// ones too, as allowed).
    pub fn flush_page_pcid(&mut self, lin: u64, pcid: u16) {
        let vpid = self.vpid();
        let pcid = u32::from(pcid);
        self.retain(|e| {
            !e.covers(lin) || !e.linear_of(vpid) || (e.ctx & ctx::PCID != pcid && !e.global)
        });
    }

    /// Drops the translation of the 4-KiB page of `lin` that a lookup in context `c` would
    /// find (a page fault or an EPT violation at `lin` invalidates it, §4.10.4.1, §29.4.3.1).
    /// Two slots, no walk of the live list.
    pub fn drop_address(&mut self, lin: u64, c: u32) {
        let vpn = lin >> 12;
        let shared = c & !ctx::PCID;
        let mut changed = false;
        for (s, want) in [(slot(vpn, c), c), (slot(vpn, shared), shared)] {
            let e = &mut self.entries[s];
            if e.vpn1 == vpn + 1 && e.ctx == want {
                e.vpn1 = DEAD;
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
        }
    }

    // --- VMX (INVEPT, INVVPID, VM entry and exit) --------------------------------------------

    /// INVEPT single-context: drops the guest-physical and combined mappings of the EPT with
    /// top table `ep4ta`, for every VPID and PCID (§29.4.3.1).
    pub fn flush_ept(&mut self, ep4ta: u64) {
        let Some(i) = self.ep4tas.iter().position(|&e| e == Some(ep4ta)) else {
            // No EPT number: nothing of it is cached.
            return;
        };
        let number = i as u32 + 1;
        self.retain(|e| ept_of(e.ctx) != number);
    }

    /// INVEPT all-context: drops the guest-physical and combined mappings of every EPT.
    pub fn flush_all_ept(&mut self) {
        self.retain(|e| ept_of(e.ctx) == 0);
    }

    /// INVVPID single-context (`keep_globals` false) and single-context-retaining-globals
    /// (true): the linear and combined mappings of `vpid`, every PCID and EP4TA. Also what VM
    /// entry and exit do to VPID 0 without VPIDs (§29.1.3).
    pub fn flush_vpid(&mut self, vpid: u16, keep_globals: bool) {
        self.retain(|e| !e.linear_of(vpid) || (keep_globals && e.global));
    }

    /// INVVPID individual-address: the linear and combined mappings of `vpid` for the page of
    /// `lin` (whatever its size), every PCID and EP4TA, globals included.
    pub fn flush_vpid_page(&mut self, vpid: u16, lin: u64) {
        self.retain(|e| !e.covers(lin) || !e.linear_of(vpid));
    }

    /// INVVPID all-context: the linear and combined mappings of every VPID but 0.
    pub fn flush_all_vpids(&mut self) {
        self.retain(|e| e.ctx & ctx::GUEST_PHYSICAL != 0 || vpid_of(e.ctx) == 0);
    }

    /// Number of live entries (for tests and counters).
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(frame: u64, pcid: u16, global: bool) -> Entry {
        Entry {
            frame,
            ctx: u32::from(pcid),
            global,
            perm: perm::WRITE,
            ..EMPTY
        }
    }

    /// An entry for the current context of `t` with `pcid`.
    fn here(t: &Tlb, frame: u64, pcid: u16, global: bool) -> Entry {
        Entry {
            ctx: t.context(pcid),
            ..entry(frame, pcid, global)
        }
    }

    #[test]
    fn flushes_follow_pcid_and_global_rules() {
        let mut t = Tlb::new();
        t.insert(0x1000, entry(1, 0, false));
        t.insert(0x2000, entry(2, 1, false));
        t.insert(0x3000, entry(3, 0, true));
        assert_eq!(t.lookup(0x1fff, 0).map(|e| e.frame), Some(1));
        assert!(t.lookup(0x2000, 0).is_none(), "other PCID");
        assert_eq!(
            t.lookup(0x3000, 7).map(|e| e.frame),
            Some(3),
            "global matches any PCID"
        );
        t.flush_pcid(0);
        assert!(t.lookup(0x1000, 0).is_none());
        assert!(t.lookup(0x2000, 1).is_some());
        assert!(t.lookup(0x3000, 0).is_some());
        t.flush_non_global();
        assert!(t.lookup(0x2000, 1).is_none());
        assert!(t.lookup(0x3000, 0).is_some());
        assert_eq!(t.live(), 1);
        t.flush_all();
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn data_pages_answer_within_a_page_under_their_key_only() {
        let key = (1, 0x1000, 0x8000_0001, 0);
        let mut d = DataPages::new();
        d.fill(0x7000_5123, 0x4_2000, false, key);
        d.fill(0x7000_6000, 0x9_1000, true, key);
        assert_eq!(d.find(0x7000_5ff8, 8, false, key), Some(0x4_2ff8));
        assert_eq!(d.find(0x7000_5fff, 1, false, key), Some(0x4_2fff));
        // The last byte on the next page, even one that is cached.
        assert_eq!(d.find(0x7000_5ff9, 8, false, key), None);
        assert_eq!(d.find(0x7000_5ffe, 4, false, key), None);
        assert_eq!(d.find(0x7000_5000, 8, true, key), None, "not writable");
        assert_eq!(d.find(0x7000_6010, 2, true, key), Some(0x9_1010));
        // A page 64 pages on shares the slot; the page at the top of the address space
        // wraps its last byte to page 0.
        assert_eq!(d.find(0x7004_5000, 8, false, key), None);
        assert_eq!(d.find(0xffff_ffff_ffff_fffc, 8, false, key), None);
        assert_eq!(
            d.find(0x7000_5000, 8, false, (2, 0x1000, 0x8000_0001, 0)),
            None
        );
        d.sync((2, 0x1000, 0x8000_0001, 0));
        assert_eq!(
            d.find_synced(0x7000_5000, 8, false),
            None,
            "a new key drops all"
        );
        // Epochs wrap after 4095 keys; the entries are cleared then, not resurrected.
        let mut d = DataPages::new();
        d.fill(0x3000, 0x5000, true, (0, 0, 0, 0));
        assert_eq!(d.epoch, 2);
        for g in 1..EPOCH_MASK {
            d.sync((g, 0, 0, 0));
        }
        assert_eq!(d.epoch, 1);
        d.sync((EPOCH_MASK, 0, 0, 0));
        assert_eq!(d.epoch, 2, "the epoch of the fill again");
        assert_eq!(d.find_synced(0x3000, 8, false), None);
        d.fill(0x3000, 0x5000, true, (EPOCH_MASK, 0, 0, 0));
        assert_eq!(d.find_synced(0x3008, 8, true), Some(0x5008));
    }

    #[test]
    fn translations_of_one_page_under_several_pcids_coexist() {
        let mut t = Tlb::new();
        for pcid in 0..16 {
            t.insert(0x40_0000, entry(0x100 + u64::from(pcid), pcid, false));
        }
        for pcid in 0..16 {
            assert_eq!(
                t.lookup(0x40_0000, pcid).map(|e| e.frame),
                Some(0x100 + u64::from(pcid)),
                "PCID {pcid}"
            );
        }
        t.flush_pcid(3);
        assert!(t.lookup(0x40_0000, 3).is_none());
        assert_eq!(t.lookup(0x40_0000, 4).map(|e| e.frame), Some(0x104));
    }

    #[test]
    fn a_global_translation_filled_under_one_pcid_serves_every_pcid() {
        let mut t = Tlb::new();
        t.insert(0x7000, entry(1, 9, false));
        t.insert(0x7000, entry(2, 9, true));
        assert_eq!(
            t.lookup(0x7000, 9).map(|e| e.frame),
            Some(2),
            "the fresh fill replaces the PCID's older one"
        );
        assert_eq!(t.lookup(0x7000, 4).map(|e| e.frame), Some(2));
        t.flush_pcid(9);
        assert_eq!(t.lookup(0x7000, 9).map(|e| e.frame), Some(2));
        t.flush_page(0x7000);
        assert!(t.lookup(0x7000, 9).is_none());
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn invlpg_drops_every_fragment_of_a_large_page() {
        let mut t = Tlb::new();
        let big = Entry {
            page_shift: 21,
            ..entry(0x200, 0, false)
        };
        t.insert(0x20_0000, big);
        t.insert(
            0x20_1000,
            Entry {
                frame: 0x201,
                ..big
            },
        );
        t.insert(0x40_0000, entry(0x999, 0, false));
        t.flush_page(0x3f_f000);
        assert!(t.lookup(0x20_0000, 0).is_none());
        assert!(t.lookup(0x20_1000, 0).is_none());
        assert!(t.lookup(0x40_0000, 0).is_some());
    }

    #[test]
    fn one_page_under_several_vpids_and_epts_coexists() {
        let mut t = Tlb::new();
        let contexts = [
            (false, 0, None),
            (true, 1, None),
            (true, 2, None),
            (true, 1, Some(0x5000)),
            (true, 1, Some(0x6000)),
            (true, 0, Some(0x5000)),
        ];
        for (i, &(nr, vpid, ept)) in contexts.iter().enumerate() {
            t.set_context(nr, vpid, ept);
            let e = here(&t, 0x100 + i as u64, 0, false);
            t.insert(0x40_0000, e);
        }
        for (i, &(nr, vpid, ept)) in contexts.iter().enumerate() {
            t.set_context(nr, vpid, ept);
            assert_eq!(
                t.lookup(0x40_0000, 0).map(|e| e.frame),
                Some(0x100 + i as u64),
                "VPID {vpid} EPT {ept:?}"
            );
        }
        // INVEPT single-context of 0x5000: both VPIDs' combined mappings of that EPT go.
        t.flush_ept(0x5000);
        let find = |t: &mut Tlb, (nr, vpid, ept): (bool, u16, Option<u64>)| {
            t.set_context(nr, vpid, ept);
            t.lookup(0x40_0000, 0).map(|e| e.frame)
        };
        assert_eq!(find(&mut t, contexts[3]), None);
        assert_eq!(find(&mut t, contexts[5]), None);
        assert_eq!(find(&mut t, contexts[4]), Some(0x104));
        assert_eq!(
            find(&mut t, contexts[1]),
            Some(0x101),
            "linear mapping kept"
        );
        // INVVPID single-context of VPID 1: its linear and combined mappings, every EPT.
        t.flush_vpid(1, false);
        assert_eq!(find(&mut t, contexts[1]), None);
        assert_eq!(find(&mut t, contexts[4]), None);
        assert_eq!(find(&mut t, contexts[2]), Some(0x102));
        assert_eq!(find(&mut t, contexts[0]), Some(0x100));
        // INVVPID all-context: every VPID but 0.
        t.flush_all_vpids();
        assert_eq!(find(&mut t, contexts[2]), None);
        assert_eq!(find(&mut t, contexts[0]), Some(0x100));
    }

    #[test]
    fn contexts_that_share_slots_do_not_see_each_other() {
        // Two VPIDs (and two EPTs) whose slots coincide: only the context compare tells
        // their entries apart.
        let base =
            |vpid: u16, ept: u32| (u32::from(vpid) << ctx::VPID_SHIFT) | (ept << ctx::EPT_SHIFT);
        let same = |a: u32, b: u32| offset(a) & (ENTRIES - 1) == offset(b) & (ENTRIES - 1);
        let other = (2..=u16::MAX).find(|&v| same(base(1, 0), base(v, 0)));
        let Some(other) = other else {
            panic!("no VPID shares VPID 1's slots");
        };
        let mut t = Tlb::new();
        t.set_context(true, 1, None);
        t.insert(0x9000, here(&t, 1, 0, false));
        t.insert(0xa000, here(&t, 2, 0, true));
        t.set_context(true, other, None);
        assert_eq!(t.lookup(0x9000, 0), None);
        assert_eq!(t.lookup(0xa000, 3), None, "a global entry of another VPID");
        t.insert(0x9000, here(&t, 3, 0, false));
        t.set_context(true, 1, None);
        assert_eq!(
            t.lookup(0x9000, 0),
            None,
            "evicted by the other VPID's fill"
        );
        // VPID 1 with EPT number 1, and a VPID with EPT number 2 on the same slots.
        let vpid = (1..=u16::MAX).find(|&v| same(base(1, 1), base(v, 2)));
        let Some(vpid) = vpid else {
            panic!("no VPID with EPT 2 shares the slots of VPID 1 with EPT 1");
        };
        t.flush_all();
        t.set_context(true, 1, Some(0x1000));
        t.insert(0x9000, here(&t, 4, 0, false));
        t.set_context(true, vpid, Some(0x2000));
        assert_eq!(t.lookup(0x9000, 0), None, "another EPT");
    }

    #[test]
    fn flushes_by_address_and_pcid_stay_in_the_current_vpid() {
        let mut t = Tlb::new();
        t.set_context(true, 7, None);
        t.insert(0x9000, here(&t, 1, 0, false));
        t.insert(0xa000, here(&t, 2, 0, true));
        t.set_context(false, 0, None);
        t.insert(0x9000, here(&t, 3, 0, false));
        t.insert(0xa000, here(&t, 4, 0, true));
        // Root operation: INVLPG, MOV to CR3, CR4.PGE change.
        t.flush_page(0x9000);
        t.flush_non_global();
        t.flush_current();
        assert_eq!(t.lookup(0xa000, 0), None);
        t.set_context(true, 7, None);
        assert_eq!(t.lookup(0x9000, 0).map(|e| e.frame), Some(1));
        assert_eq!(t.lookup(0xa000, 5).map(|e| e.frame), Some(2));
        // Retaining globals keeps 0xa000; then individual-address drops it.
        t.flush_vpid(7, true);
        assert_eq!(t.lookup(0x9000, 0), None);
        assert_eq!(t.lookup(0xa000, 0).map(|e| e.frame), Some(2));
        t.flush_vpid_page(7, 0xa123);
        assert_eq!(t.lookup(0xa000, 0), None);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn guest_physical_mappings_are_tagged_by_ept_only() {
        let mut t = Tlb::new();
        t.set_context(true, 3, Some(0x8000));
        let c = t.guest_physical_context();
        t.insert(
            0x1000,
            Entry {
                ctx: c,
                ..entry(9, 0, false)
            },
        );
        assert_eq!(t.lookup_guest_physical(0x1fff).map(|e| e.frame), Some(9));
        assert_eq!(t.lookup(0x1000, 0), None, "not a linear mapping");
        t.flush_vpid(3, false);
        t.flush_current();
        t.flush_all_vpids();
        assert!(
            t.lookup_guest_physical(0x1000).is_some(),
            "INVVPID keeps them"
        );
        t.set_context(true, 4, Some(0x8000));
        assert!(t.lookup_guest_physical(0x1000).is_some(), "any VPID");
        t.set_context(true, 4, Some(0x9000));
        assert!(t.lookup_guest_physical(0x1000).is_none(), "another EPT");
        t.set_context(true, 4, Some(0x8000));
        t.flush_all_ept();
        assert!(t.lookup_guest_physical(0x1000).is_none());
    }

    #[test]
    fn an_eighth_ept_recycles_the_oldest_number_and_drops_its_mappings() {
        let mut t = Tlb::new();
        for i in 0..=EPT_CONTEXTS as u64 {
            t.set_context(true, 1, Some(0x10_0000 * (i + 1)));
            t.insert(0x1000, here(&t, i, 0, false));
        }
        t.set_context(true, 1, Some(0x20_0000));
        assert_eq!(
            t.lookup(0x1000, 0).map(|e| e.frame),
            Some(1),
            "kept its number"
        );
        // The first EPT lost its number (and mappings); coming back takes the next one's.
        t.set_context(true, 1, Some(0x10_0000));
        assert_eq!(t.lookup(0x1000, 0), None, "recycled");
        t.set_context(true, 1, Some(0x20_0000));
        assert_eq!(t.lookup(0x1000, 0), None, "recycled in turn");
        t.set_context(true, 1, Some(0x80_0000));
        assert_eq!(t.lookup(0x1000, 0).map(|e| e.frame), Some(7));
    }

    #[test]
    fn dropping_one_address_leaves_the_rest() {
        let mut t = Tlb::new();
        t.set_context(true, 2, Some(0x3000));
        t.insert(0x5000, here(&t, 1, 3, false));
        t.insert(0x6000, here(&t, 2, 3, true));
        t.insert(0x7000, here(&t, 3, 3, false));
        let c = t.context(3);
        t.drop_address(0x5000, c);
        t.drop_address(0x6000, c);
        assert_eq!(t.lookup(0x5000, 3), None);
        assert_eq!(t.lookup(0x6000, 3), None);
        assert_eq!(t.lookup(0x7000, 3).map(|e| e.frame), Some(3));
        // Refilling a dropped slot does not list it twice.
        t.insert(0x5000, here(&t, 4, 3, false));
        assert_eq!(t.live(), 3);
        t.flush_all();
        assert_eq!(t.live(), 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Pages that share slots: neighbours, and pages a whole cache apart.
    const PAGES: [u64; 6] = [0x400, 0x401, 0x402, 0x800, 0x800 + ENTRIES as u64, 0x7_fff];
    const PCIDS: u16 = 4;
    const VPIDS: u16 = 3;
    /// EP4TAs 0x1000, 0x2000, 0x3000 (or EPT off).
    const EPTS: u64 = 3;

    #[derive(Clone, Debug)]
    enum Op {
        /// Fill page `PAGES[i]` under a PCID, global or not, with a frame.
        Insert(usize, u16, bool, u64),
        /// Switch to a VPID and EPT (0: off).
        Context(u16, u64),
        FlushAll,
        FlushCurrent,
        FlushNonGlobal,
        FlushPcid(u16),
        FlushPage(usize),
        FlushPagePcid(usize, u16),
        FlushEpt(u64),
        FlushAllEpt,
        FlushVpid(u16, bool),
        FlushVpidPage(u16, usize),
        FlushAllVpids,
    }

    fn op() -> impl Strategy<Value = Op> {
        let page = 0..PAGES.len();
        prop_oneof![
            8 => (page.clone(), 0..PCIDS, any::<bool>(), 0u64..1 << 20)
                .prop_map(|(i, p, g, f)| Op::Insert(i, p, g, f)),
            3 => (0..VPIDS, 0..=EPTS).prop_map(|(v, e)| Op::Context(v, e)),
            1 => Just(Op::FlushAll),
            1 => Just(Op::FlushCurrent),
            1 => Just(Op::FlushNonGlobal),
            2 => (0..PCIDS).prop_map(Op::FlushPcid),
            2 => page.clone().prop_map(Op::FlushPage),
            2 => (page.clone(), 0..PCIDS).prop_map(|(i, p)| Op::FlushPagePcid(i, p)),
            1 => (1..=EPTS).prop_map(Op::FlushEpt),
            1 => Just(Op::FlushAllEpt),
            1 => (0..VPIDS, any::<bool>()).prop_map(|(v, g)| Op::FlushVpid(v, g)),
            1 => (0..VPIDS, page).prop_map(|(v, i)| Op::FlushVpidPage(v, i)),
            1 => Just(Op::FlushAllVpids),
        ]
    }

    /// A fill the naive TLB holds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Held {
        page: u64,
        vpid: u16,
        ept: u64,
        pcid: u16,
        global: bool,
        frame: u64,
    }

    proptest! {
        /// Against a naive TLB that keeps every fill until an architectural flush drops it: a
        /// lookup finds only a translation the naive TLB still holds for that page, VPID, EPT
        /// and PCID, and a fill is found right after it.
        #[test]
        fn lookups_return_only_fills_that_no_flush_dropped(ops in proptest::collection::vec(op(), 1..200)) {
            let mut t = Tlb::new();
            let mut held: Vec<Held> = Vec::new();
            let (mut vpid, mut ept) = (0u16, 0u64);
            for op in ops {
                match op {
                    Op::Insert(i, pcid, global, frame) => {
                        let lin = PAGES[i] << 12;
                        t.insert(lin, Entry { frame, ctx: t.context(pcid), global, ..EMPTY });
                        held.push(Held { page: PAGES[i], vpid, ept, pcid, global, frame });
                        prop_assert_eq!(t.lookup(lin | 0xabc, pcid).map(|e| e.frame), Some(frame));
                    }
                    Op::Context(v, e) => {
                        (vpid, ept) = (v, e);
                        t.set_context(v != 0 || e != 0, v, (e != 0).then_some(e << 12));
                    }
                    Op::FlushAll => {
                        t.flush_all();
                        held.clear();
                    }
                    Op::FlushCurrent => {
                        t.flush_current();
                        held.retain(|h| h.vpid != vpid);
                    }
                    Op::FlushNonGlobal => {
                        t.flush_non_global();
                        held.retain(|h| h.vpid != vpid || h.global);
                    }
                    Op::FlushPcid(p) => {
                        t.flush_pcid(p);
                        held.retain(|h| h.vpid != vpid || h.global || h.pcid != p);
                    }
                    Op::FlushPage(i) => {
                        t.flush_page(PAGES[i] << 12);
                        held.retain(|h| h.vpid != vpid || h.page != PAGES[i]);
                    }
                    Op::FlushPagePcid(i, p) => {
                        t.flush_page_pcid(PAGES[i] << 12, p);
                        held.retain(|h| h.vpid != vpid || h.page != PAGES[i] || (h.pcid != p && !h.global));
                    }
                    Op::FlushEpt(e) => {
                        t.flush_ept(e << 12);
                        held.retain(|h| h.ept != e);
                    }
                    Op::FlushAllEpt => {
                        t.flush_all_ept();
                        held.retain(|h| h.ept == 0);
                    }
                    Op::FlushVpid(v, keep) => {
                        t.flush_vpid(v, keep);
                        held.retain(|h| h.vpid != v || (keep && h.global));
                    }
                    Op::FlushVpidPage(v, i) => {
                        t.flush_vpid_page(v, PAGES[i] << 12);
                        held.retain(|h| h.vpid != v || h.page != PAGES[i]);
                    }
                    Op::FlushAllVpids => {
                        t.flush_all_vpids();
                        held.retain(|h| h.vpid == 0);
                    }
                }
                for &page in &PAGES {
                    for pcid in 0..PCIDS {
                        if let Some(e) = t.lookup(page << 12, pcid) {
                            let found = held.iter().any(|h| {
                                h.page == page && h.vpid == vpid && h.ept == ept
                                    && h.global == e.global && h.frame == e.frame
                                    && (h.pcid == pcid || h.global)
                            });
                            prop_assert!(found, "page {:#x} PCID {} gave {:?}", page, pcid, e);
                        }
                    }
                }
                prop_assert!(t.live() <= ENTRIES);
            }
        }
    }
}
