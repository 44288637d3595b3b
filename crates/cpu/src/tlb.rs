//! The translation lookaside buffer (SDM Vol. 3A §4.10).
//!
//! A direct-mapped cache of 4-KiB translations indexed by the low bits of the linear page
//! number. A hit is a compare of the tag (page number and PCID, or global) and a permission
//! check against the cached paging-structure rights; the entry remembers where the frame lives
//! in RAM so that the access is a slice index. Large pages are cached one 4-KiB fragment at a
//! time and remember their size, so INVLPG drops every fragment of the page (§4.10.2.3).
//!
//! Invalidation follows §4.10.4: INVLPG, MOV to CR3 (all non-global entries of the new PCID, or
//! none with the no-flush bit), global entries survive unless CR4.PGE changes, INVPCID types
//! 0–3, and changes of the paging bits of CR0/CR4 flush everything. A flush walks the list of
//! live entries, so it costs what is live, not the size of the cache. Entries carry a `tag`
//! word reserved for the VPID/EPTP of VMX (always 0 until VMX exists).

/// Number of entries (a power of two).
const ENTRIES: usize = 1024;

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

    /// The entry for `lin` under `pcid`, if cached.
    #[inline]
    pub fn lookup(&self, lin: u64, pcid: u16) -> Option<&Entry> {
        let vpn = lin >> 12;
        let e = &self.entries[(vpn as usize) & (ENTRIES - 1)];
        (e.vpn1 == vpn + 1 && (e.pcid == pcid || e.global)).then_some(e)
    }

    /// Caches a translation (evicting whatever shared its slot).
    pub fn insert(&mut self, lin: u64, entry: Entry) {
        self.generation += 1;
        let vpn = lin >> 12;
        let slot = (vpn as usize) & (ENTRIES - 1);
        if self.entries[slot].vpn1 == 0 {
            self.live.push(slot as u16);
        }
        self.entries[slot] = Entry {
            vpn1: vpn + 1,
            ..entry
        };
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
