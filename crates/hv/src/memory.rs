//! The hypervisor's own view of host-physical memory (DESIGN.md §5): reading and writing it,
//! and frames to build its structures in (VMCS regions, EPT tables, shadow page tables). The
//! software CPU's board implements it natively; guest-hv implements it over its own page
//! tables and allocator. A frame handed out is zeroed and belongs to the hypervisor until it
//! is freed; guests never get a mapping of it.

use core::fmt;

use x86::{Hfn, Hpa};

/// A host-physical access the memory cannot do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// The first address that failed.
    pub at: Hpa,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host-physical {:?} is not memory", self.at)
    }
}

/// Host-physical memory and a frame allocator.
pub trait PhysMemory {
    /// Reads `buf.len()` bytes at `at`.
    fn read(&mut self, at: Hpa, buf: &mut [u8]) -> Result<(), MemError>;

    /// Writes `data` at `at`.
    fn write(&mut self, at: Hpa, data: &[u8]) -> Result<(), MemError>;

    /// A zeroed 4-KiB frame for the hypervisor's own use, `None` when none is left.
    fn alloc_frame(&mut self) -> Option<Hfn>;

    /// Returns a frame from [`PhysMemory::alloc_frame`].
    fn free_frame(&mut self, frame: Hfn);

    /// Reads a little-endian u64.
    fn read_u64(&mut self, at: Hpa) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(at, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    fn write_u64(&mut self, at: Hpa, value: u64) -> Result<(), MemError> {
        self.write(at, &value.to_le_bytes())
    }
}

/// Host memory as a byte vector with a bump allocator over a frame range: for unit tests and
/// for hosts whose memory is one slice.
#[derive(Debug)]
pub struct VecMemory {
    /// The bytes, host-physical address 0 upward.
    pub bytes: alloc::vec::Vec<u8>,
    next: u64,
    end: u64,
    free: alloc::vec::Vec<Hfn>,
}

impl VecMemory {
    /// `size` bytes of memory whose frames `frames` (a range of frame numbers) the
    /// allocator hands out.
    pub fn new(size: usize, frames: core::ops::Range<u64>) -> Self {
        Self {
            bytes: alloc::vec![0; size],
            next: frames.start,
            end: frames.end,
            free: alloc::vec::Vec::new(),
        }
    }

    fn range(&self, at: Hpa, len: usize) -> Result<core::ops::Range<usize>, MemError> {
        let start = usize::try_from(at.raw()).map_err(|_| MemError { at })?;
        let end = start.checked_add(len).ok_or(MemError { at })?;
        if end > self.bytes.len() {
            return Err(MemError { at });
        }
        Ok(start..end)
    }
}

impl PhysMemory for VecMemory {
    fn read(&mut self, at: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(at, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write(&mut self, at: Hpa, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(at, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }

    fn alloc_frame(&mut self) -> Option<Hfn> {
        let frame = match self.free.pop() {
            Some(f) => f,
            None if self.next < self.end => {
                self.next += 1;
                Hfn::new(self.next - 1)
            }
            None => return None,
        };
        let r = self.range(frame.addr(), 4096).ok()?;
        self.bytes[r].fill(0);
        Some(frame)
    }

    fn free_frame(&mut self, frame: Hfn) {
        self.free.push(frame);
    }
}
