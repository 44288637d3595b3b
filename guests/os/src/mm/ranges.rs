//! A set of physical page ranges: the memory the frame allocator may hand out. Ranges are kept
//! sorted, disjoint and page-aligned, so overlapping or unsorted entries in a firmware memory map
//! can never make one frame usable twice. Pure bookkeeping, tested on the host
//! (`crates/nestvisor/tests/guest_os_ranges.rs` includes this file).

/// Most disjoint ranges the set holds; memory beyond that is left unused.
pub const MAX_RANGES: usize = 64;

const PAGE: u64 = 4096;

/// Sorted, disjoint, page-aligned `[start, end)` ranges.
#[derive(Debug, Clone, Copy)]
pub struct PageRanges {
    list: [(u64, u64); MAX_RANGES],
    count: usize,
}

impl Default for PageRanges {
    fn default() -> Self {
        Self::new()
    }
}

impl PageRanges {
    pub const fn new() -> Self {
        PageRanges {
            list: [(0, 0); MAX_RANGES],
            count: 0,
        }
    }

    /// The ranges, in address order.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.list[..self.count]
    }

    /// Adds the whole pages inside `[start, end)`, merging with what is there. Returns false
    /// (and adds nothing) when the set is full.
    pub fn add(&mut self, start: u64, end: u64) -> bool {
        let (Some(start), end) = (start.checked_next_multiple_of(PAGE), end & !(PAGE - 1)) else {
            return true;
        };
        if start >= end {
            return true;
        }
        // Ranges that touch or overlap [start, end) are absorbed into it.
        let first = self
            .as_slice()
            .iter()
            .position(|&(_, e)| e >= start)
            .unwrap_or(self.count);
        let last = self
            .as_slice()
            .iter()
            .rposition(|&(s, _)| s <= end)
            .map_or(first, |i| i + 1);
        if first >= last {
            if self.count == MAX_RANGES {
                return false;
            }
            self.list.copy_within(first..self.count, first + 1);
            self.list[first] = (start, end);
            self.count += 1;
            return true;
        }
        let merged = (
            start.min(self.list[first].0),
            end.max(self.list[last - 1].1),
        );
        self.list[first] = merged;
        self.list.copy_within(last..self.count, first + 1);
        self.count -= last - first - 1;
        true
    }

    /// Removes `[start, end)`, widened to whole pages. A range split in two when the set is full
    /// loses its upper part (memory left unused, never memory used twice).
    pub fn remove(&mut self, start: u64, end: u64) {
        let start = start & !(PAGE - 1);
        let end = end.checked_next_multiple_of(PAGE).unwrap_or(!(PAGE - 1)); // the last page boundary
        if start >= end {
            return;
        }
        let mut i = 0;
        while i < self.count {
            let (s, e) = self.list[i];
            if e <= start || s >= end {
                i += 1;
            } else if s < start && end < e {
                self.list[i] = (s, start);
                if self.count < MAX_RANGES {
                    self.list.copy_within(i + 1..self.count, i + 2);
                    self.list[i + 1] = (end, e);
                    self.count += 1;
                }
                return;
            } else if s < start {
                self.list[i] = (s, start);
                i += 1;
            } else if end < e {
                self.list[i] = (end, e);
                i += 1;
            } else {
                self.list.copy_within(i + 1..self.count, i);
                self.count -= 1;
            }
        }
    }
}
