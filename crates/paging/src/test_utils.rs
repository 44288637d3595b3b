//! Test helpers: a sparse memory over any address space.

extern crate std;

use std::boxed::Box;
use std::collections::BTreeMap;

use crate::memory::{Address, Memory, MemoryError};

/// Sparse little-endian memory: 4-KiB frames that exist only once mapped or written by a test.
/// Accesses to frames never mapped are [`MemoryError`]s.
#[derive(Debug, Default, Clone)]
pub struct SparseMemory {
    frames: BTreeMap<u64, Box<[u8; 4096]>>,
}

impl SparseMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the frame containing `addr` exist (zero-filled).
    pub fn map(&mut self, addr: u64) {
        self.frames
            .entry(addr >> 12)
            .or_insert_with(|| Box::new([0; 4096]));
    }

    /// Writes an 8-byte entry, mapping its frame.
    pub fn set64(&mut self, addr: u64, value: u64) {
        self.map(addr);
        self.put(addr, &value.to_le_bytes());
    }

    /// Writes a 4-byte entry, mapping its frame.
    pub fn set32(&mut self, addr: u64, value: u32) {
        self.map(addr);
        self.put(addr, &value.to_le_bytes());
    }

    pub fn get64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.get(addr, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// The 8-byte entry at `addr`, `None` if its frame was never mapped.
    pub fn try_get64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.get(addr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    pub fn get32(&self, addr: u64) -> u32 {
        let mut b = [0u8; 4];
        self.get(addr, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn put(&mut self, addr: u64, bytes: &[u8]) {
        let frame = self.frames.get_mut(&(addr >> 12)).unwrap();
        let off = (addr & 0xfff) as usize;
        frame[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn get(&self, addr: u64, out: &mut [u8]) -> Option<()> {
        let frame = self.frames.get(&(addr >> 12))?;
        let off = (addr & 0xfff) as usize;
        out.copy_from_slice(frame.get(off..off + out.len())?);
        Some(())
    }
}

impl<A: Address> Memory<A> for SparseMemory {
    fn read_u32(&mut self, addr: A) -> Result<u32, MemoryError<A>> {
        let mut b = [0u8; 4];
        self.get(addr.to_raw(), &mut b)
            .ok_or(MemoryError { addr })?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&mut self, addr: A) -> Result<u64, MemoryError<A>> {
        let mut b = [0u8; 8];
        self.get(addr.to_raw(), &mut b)
            .ok_or(MemoryError { addr })?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u32(&mut self, addr: A, value: u32) -> Result<(), MemoryError<A>> {
        if !self.frames.contains_key(&(addr.to_raw() >> 12)) {
            return Err(MemoryError { addr });
        }
        self.put(addr.to_raw(), &value.to_le_bytes());
        Ok(())
    }
    fn write_u64(&mut self, addr: A, value: u64) -> Result<(), MemoryError<A>> {
        if !self.frames.contains_key(&(addr.to_raw() >> 12)) {
            return Err(MemoryError { addr });
        }
        self.put(addr.to_raw(), &value.to_le_bytes());
        Ok(())
    }
}

/// A context with every optional check off, MAXPHYADDR 52 and 1-GiB pages.
pub fn plain_ctx() -> crate::PagingContext {
    crate::PagingContext {
        wp: false,
        pse: false,
        pge: false,
        smep: false,
        smap: false,
        nxe: false,
        ac: false,
        maxphyaddr: 52,
        gb_pages: true,
    }
}
