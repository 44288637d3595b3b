//! The regions (VMAs) of a process's address space: sorted, non-overlapping `[start, end)`
//! ranges with `PROT_*` rights, neighbours with equal rights merged. Pure bookkeeping over a
//! fixed-size array, with no access to page tables, so that it can be tested on its own (the
//! host test `crates/nestvisor/tests/guest_os_regions.rs` includes this file).

/// Most regions one process can have.
pub const MAX_REGIONS: usize = 64;

/// One region: `[start, end)` with `PROT_*` rights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub prot: u64,
}

/// Why a change to the regions was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// Empty or inverted range, or overlap with an existing region.
    Invalid,
    /// The change needs more than [`MAX_REGIONS`] regions.
    Full,
    /// Part of the range is not in any region.
    Unmapped,
}

/// The regions of one address space.
#[derive(Debug, Clone, Copy)]
pub struct Regions {
    list: [Region; MAX_REGIONS],
    count: usize,
}

impl Default for Regions {
    fn default() -> Self {
        Self::new()
    }
}

impl Regions {
    pub const fn new() -> Self {
        Regions {
            list: [Region {
                start: 0,
                end: 0,
                prot: 0,
            }; MAX_REGIONS],
            count: 0,
        }
    }

    /// The regions, sorted by address.
    pub fn as_slice(&self) -> &[Region] {
        &self.list[..self.count]
    }

    /// The region containing `addr`.
    pub fn find(&self, addr: u64) -> Option<Region> {
        self.as_slice()
            .iter()
            .copied()
            .find(|r| r.start <= addr && addr < r.end)
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.as_slice()
            .iter()
            .any(|r| r.start < end && start < r.end)
    }

    /// Adds `[start, end)` with `prot` over addresses no region covers.
    pub fn insert(&mut self, start: u64, end: u64, prot: u64) -> Result<(), RegionError> {
        if start >= end || self.overlaps(start, end) {
            return Err(RegionError::Invalid);
        }
        if self.count == MAX_REGIONS {
            return Err(RegionError::Full);
        }
        let at = self
            .as_slice()
            .iter()
            .position(|r| r.start > start)
            .unwrap_or(self.count);
        self.list.copy_within(at..self.count, at + 1);
        self.list[at] = Region { start, end, prot };
        self.count += 1;
        self.merge();
        Ok(())
    }

    /// Removes `[start, end)` from every region: regions inside it go, regions overlapping one
    /// end are trimmed, a region around it is split (the only case that needs a free slot).
    pub fn remove(&mut self, start: u64, end: u64) -> Result<(), RegionError> {
        if start >= end {
            return Err(RegionError::Invalid);
        }
        if let Some(i) = self
            .as_slice()
            .iter()
            .position(|r| r.start < start && end < r.end)
        {
            if self.count == MAX_REGIONS {
                return Err(RegionError::Full);
            }
            self.list.copy_within(i..self.count, i + 1);
            self.list[i].end = start;
            self.list[i + 1].start = end;
            self.count += 1;
            return Ok(());
        }
        let mut kept = 0;
        for i in 0..self.count {
            let mut r = self.list[i];
            if start <= r.start && r.end <= end {
                continue; // inside: removed
            }
            if r.start < start && start < r.end {
                r.end = start; // overlaps the range's start: keep the head
            } else if r.start < end && end < r.end {
                r.start = end; // overlaps the range's end: keep the tail
            }
            self.list[kept] = r;
            kept += 1;
        }
        self.count = kept;
        Ok(())
    }

    /// Gives `[start, end)` the rights `prot`; every address of it must be in a region.
    pub fn protect(&mut self, start: u64, end: u64, prot: u64) -> Result<(), RegionError> {
        if start >= end {
            return Err(RegionError::Invalid);
        }
        let mut covered = start;
        for r in self.as_slice() {
            if r.end <= covered || r.start >= end {
                continue;
            }
            if r.start > covered {
                return Err(RegionError::Unmapped);
            }
            covered = r.end;
        }
        if covered < end {
            return Err(RegionError::Unmapped);
        }
        self.split(start)?;
        self.split(end)?;
        for r in &mut self.list[..self.count] {
            if start <= r.start && r.end <= end {
                r.prot = prot;
            }
        }
        self.merge();
        Ok(())
    }

    /// The lowest address at or above `from` where `len` bytes fit below `limit`.
    pub fn first_fit(&self, from: u64, len: u64, limit: u64) -> Option<u64> {
        let mut at = from;
        for r in self.as_slice() {
            if r.end <= at {
                continue;
            }
            if r.start >= at.checked_add(len)? {
                break;
            }
            at = r.end;
        }
        at.checked_add(len).filter(|&end| end <= limit).map(|_| at)
    }

    /// Splits the region strictly containing `at` in two.
    fn split(&mut self, at: u64) -> Result<(), RegionError> {
        let Some(i) = self
            .as_slice()
            .iter()
            .position(|r| r.start < at && at < r.end)
        else {
            return Ok(());
        };
        if self.count == MAX_REGIONS {
            return Err(RegionError::Full);
        }
        self.list.copy_within(i..self.count, i + 1);
        self.list[i].end = at;
        self.list[i + 1].start = at;
        self.count += 1;
        Ok(())
    }

    /// Joins adjacent regions with equal rights.
    fn merge(&mut self) {
        let mut i = 0;
        while i + 1 < self.count {
            let (a, b) = (self.list[i], self.list[i + 1]);
            if a.end == b.start && a.prot == b.prot {
                self.list[i].end = b.end;
                self.list.copy_within(i + 2..self.count, i + 1);
                self.count -= 1;
            } else {
                i += 1;
            }
        }
    }
}
