//! The translation lookaside buffer (SDM Vol. 3A §4.10).
//!
//! A direct-mapped cache of 4-KiB translations indexed by the linear page number and the
//! address-space context it was filled under, so that translations for several PCIDs live side
//! by side (§4.10.1): a context moves every page of its address space to its own offset in the
//! cache, and the same page under two PCIDs takes two slots. Global translations (§4.10.2.4) are
//! used whatever the PCID, so they live at the slot of context 0 and a lookup that misses its
//! own slot looks there too. A hit is a compare of the tag (page number and PCID, or global) and
//! a permission check against the cached paging-structure rights; the entry remembers where the
//! frame lives in RAM so that the access is a slice index. Large pages are cached one 4-KiB
//! fragment at a time and remember their size, so INVLPG drops every fragment of the page
//! (§4.10.2.3).
//!
//! Invalidation follows §4.10.4: INVLPG, MOV to CR3 (all non-global entries of the new PCID, or
//! none with the no-flush bit), global entries survive unless CR4.PGE changes, INVPCID types
//! 0–3, and changes of the paging bits of CR0/CR4 flush everything. A flush walks the list of
//! live entries, so it costs what is live, not the size of the cache. Entries carry a `tag`
//! word reserved for the VPID/EPTP of VMX (always 0 until VMX exists); it will join the PCID in
//! the context that picks the slot.

/// Number of entries (a power of two).
const ENTRIES: usize = 1024;

/// How far apart the slots of one page under consecutive contexts are: about `ENTRIES / φ` and
/// odd, so that the address spaces of consecutive PCIDs start far apart and the first
/// `ENTRIES` contexts each start at a slot of their own.
const SPREAD: usize = (ENTRIES * 618 / 1000) | 1;

/// The context whose slots hold the global translations.
const GLOBAL_CONTEXT: u16 = 0;

/// The slot of linear page `vpn` in address-space context `context` (the PCID).
#[inline]
fn slot(vpn: u64, context: u16) -> usize {
    (vpn as usize).wrapping_add(usize::from(context).wrapping_mul(SPREAD)) & (ENTRIES - 1)
}

/// Permission bits cached with a translation (the combination over all levels, §4.6).
#[allow(missing_docs)]
pub(crate) mod perm {
    /// User-mode accessible (U/S = 1 at every level).
    pub const USER: u8 = 1 << 0;
    /// Writable (R/W = 1 at every level).
    pub const WRITE: u8 = 1 << 1;
    /// Executable (no XD bit set at any level, or EFER.NXE = 0).
    pub const EXEC: u8 = 1 << 2;
    /// The dirty flag of the final entry is set: writes need not walk to set it.
    pub const DIRTY: u8 = 1 << 3;
}

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Linear page number + 1 (0 = empty slot).
    pub vpn1: u64,
    /// Physical frame number.
    pub frame: u64,
    /// Byte offset of the frame in RAM, or `usize::MAX` for MMIO / unbacked.
    pub ram: usize,
    /// The PCID the entry was filled under.
    pub pcid: u16,
    /// VPID/EPTP tag for VMX (0 outside VMX non-root operation).
    pub tag: u16,
    /// Global translation (G = 1 and CR4.PGE = 1 when it was filled).
    pub global: bool,
    /// log2 of the page size (12, 21, 22 or 30).
    pub page_shift: u8,
    /// [`perm`] bits.
    pub perm: u8,
}

impl Entry {
    /// Whether this entry translates page `vpn` for `pcid`.
    #[inline]
    fn translates(&self, vpn: u64, pcid: u16) -> bool {
        self.vpn1 == vpn + 1 && (self.pcid == pcid || self.global)
    }
}

const EMPTY: Entry = Entry {
    vpn1: 0,
    frame: 0,
    ram: usize::MAX,
    pcid: 0,
    tag: 0,
    global: false,
    page_shift: 12,
    perm: 0,
};

/// The TLB.
#[derive(Debug)]
pub(crate) struct Tlb {
    entries: Vec<Entry>,
    /// Slots that may be non-empty.
    live: Vec<u16>,
    /// Bumped by every change, so that derived caches (the fetch page) know when to drop.
    generation: u64,
}

impl Tlb {
    pub fn new() -> Self {
        Self {
            entries: vec![EMPTY; ENTRIES],
            live: Vec::with_capacity(ENTRIES),
            generation: 0,
        }
    }

    /// The entry for `lin` under `pcid`, if cached: in the PCID's own slot, or a global one in
    /// the slot of the global context.
    #[inline]
    pub fn lookup(&self, lin: u64, pcid: u16) -> Option<&Entry> {
        let vpn = lin >> 12;
        let own = &self.entries[slot(vpn, pcid)];
        if own.translates(vpn, pcid) {
            return Some(own);
        }
        let global = &self.entries[slot(vpn, GLOBAL_CONTEXT)];
        global.translates(vpn, pcid).then_some(global)
    }

    /// Caches a translation for the PCID it was filled under (evicting whatever shared its
    /// slot).
    pub fn insert(&mut self, lin: u64, entry: Entry) {
        self.generation += 1;
        let vpn = lin >> 12;
        let entry = Entry {
            vpn1: vpn + 1,
            ..entry
        };
        let own = slot(vpn, entry.pcid);
        if !entry.global {
            self.fill(own, entry);
            return;
        }
        // An older translation of the page in the PCID's own slot would be found before the
        // global slot: the fresh one replaces it there as well.
        if self.entries[own].translates(vpn, entry.pcid) {
            self.entries[own] = entry;
        }
        self.fill(slot(vpn, GLOBAL_CONTEXT), entry);
    }

    fn fill(&mut self, slot: usize, entry: Entry) {
        if self.entries[slot].vpn1 == 0 {
            self.live.push(slot as u16);
        }
        self.entries[slot] = entry;
    }

    /// Changes with every insertion and flush.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        self.generation += 1;
        let entries = &mut self.entries;
        self.live.retain(|&slot| {
            let e = &mut entries[slot as usize];
            if e.vpn1 != 0 && !keep(e) {
                *e = EMPTY;
            }
            e.vpn1 != 0
        });
    }

    /// Drops everything, global entries included.
    pub fn flush_all(&mut self) {
        self.retain(|_| false);
    }

    /// Drops every non-global entry (MOV to CR3 without PCIDs; INVPCID type 3).
    pub fn flush_non_global(&mut self) {
        self.retain(|e| e.global);
    }

    /// Drops the non-global entries of `pcid` (MOV to CR3 with PCIDs; INVPCID type 1).
    pub fn flush_pcid(&mut self, pcid: u16) {
        self.retain(|e| e.global || e.pcid != pcid);
    }

    /// INVLPG: drops the entries of the page containing `lin`, for every PCID and global ones
    /// too (§4.10.4.1), whatever the size of that page.
    pub fn flush_page(&mut self, lin: u64) {
        self.retain(|e| {
            let page = ((e.vpn1 - 1) << 12) >> e.page_shift;
            page != lin >> e.page_shift
        });
    }

    /// INVPCID type 0: the entries for `lin` tagged with `pcid` (global ones too, as allowed).
    pub fn flush_page_pcid(&mut self, lin: u64, pcid: u16) {
        self.retain(|e| {
            let page = ((e.vpn1 - 1) << 12) >> e.page_shift;
            page != lin >> e.page_shift || (e.pcid != pcid && !e.global)
        });
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
            pcid,
            global,
            perm: perm::WRITE,
            ..EMPTY
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
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Pages that share slots: neighbours, and pages a whole cache apart.
    const PAGES: [u64; 6] = [0x400, 0x401, 0x402, 0x800, 0x800 + ENTRIES as u64, 0x7_fff];
    const PCIDS: u16 = 4;

    #[derive(Clone, Debug)]
    enum Op {
        /// Fill page `PAGES[i]` under a PCID, global or not, with a frame.
        Insert(usize, u16, bool, u64),
        FlushAll,
        FlushNonGlobal,
        FlushPcid(u16),
        FlushPage(usize),
        FlushPagePcid(usize, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let page = 0..PAGES.len();
        prop_oneof![
            8 => (page.clone(), 0..PCIDS, any::<bool>(), 0u64..1 << 20)
                .prop_map(|(i, p, g, f)| Op::Insert(i, p, g, f)),
            1 => Just(Op::FlushAll),
            1 => Just(Op::FlushNonGlobal),
            2 => (0..PCIDS).prop_map(Op::FlushPcid),
            2 => page.clone().prop_map(Op::FlushPage),
            2 => (page, 0..PCIDS).prop_map(|(i, p)| Op::FlushPagePcid(i, p)),
        ]
    }

    proptest! {
        /// Against a naive TLB that keeps every fill until an architectural flush drops it: a
        /// lookup finds only a translation the naive TLB still holds for that page and PCID,
        /// and a fill is found right after it.
        #[test]
        fn lookups_return_only_fills_that_no_flush_dropped(ops in proptest::collection::vec(op(), 1..200)) {
            let mut t = Tlb::new();
            // (page, PCID, global, frame) of every fill not yet flushed.
            let mut held: Vec<(u64, u16, bool, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(i, pcid, global, frame) => {
                        let lin = PAGES[i] << 12;
                        t.insert(lin, Entry { frame, pcid, global, ..EMPTY });
                        held.push((PAGES[i], pcid, global, frame));
                        prop_assert_eq!(t.lookup(lin | 0xabc, pcid).map(|e| e.frame), Some(frame));
                    }
                    Op::FlushAll => {
                        t.flush_all();
                        held.clear();
                    }
                    Op::FlushNonGlobal => {
                        t.flush_non_global();
                        held.retain(|h| h.2);
                    }
                    Op::FlushPcid(p) => {
                        t.flush_pcid(p);
                        held.retain(|h| h.2 || h.1 != p);
                    }
                    Op::FlushPage(i) => {
                        t.flush_page(PAGES[i] << 12);
                        held.retain(|h| h.0 != PAGES[i]);
                    }
                    Op::FlushPagePcid(i, p) => {
                        t.flush_page_pcid(PAGES[i] << 12, p);
                        held.retain(|h| h.0 != PAGES[i] || (h.1 != p && !h.2));
                    }
                }
                for &page in &PAGES {
                    for pcid in 0..PCIDS {
                        if let Some(e) = t.lookup(page << 12, pcid) {
                            let fill = (page, e.pcid, e.global, e.frame);
                            prop_assert!(e.pcid == pcid || e.global);
                            prop_assert!(held.contains(&fill), "{:?} was flushed", fill);
                        }
                    }
                }
                prop_assert!(t.live() <= ENTRIES);
            }
        }
    }
}
