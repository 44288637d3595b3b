//! The decode cache: instructions decoded once per physical location and reused until their
//! page is written (SDM Vol. 3A §11.6 "Self-Modifying Code": a write to a code page takes
//! effect for the next instruction fetched from it).
//!
//! Direct-mapped by RAM offset and decoder width. Each RAM page has a generation number and a
//! "holds cached code" bit; the first write to such a page bumps its generation, which
//! invalidates every entry decoded from it at once. Instructions that cross a page boundary,
//! or live outside RAM, are not cached.

use iced_x86::Instruction;

use crate::block::Blocks;
use crate::bus::Bus;
use crate::uop::Uop;

const ENTRIES: usize = 1 << 14;

/// What a lookup reads: 48 bytes, the iced instruction is kept apart (`ICache::instrs`).
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// (RAM offset << 2 | width code) + 1; 0 = empty.
    key: u64,
    generation: u32,
    uop: Uop,
}

/// The cache.
#[derive(Debug)]
pub(crate) struct ICache {
    slots: Vec<Slot>,
    /// The iced form of each slot's instruction, read only for generic instructions.
    instrs: Vec<Instruction>,
    generation: Vec<u32>,
    has_code: Vec<bool>,
    /// Blocks of instructions, checked against the same page generations (`block`).
    pub blocks: Blocks,
}

#[inline]
fn key(off: usize, bits: u32) -> u64 {
    (((off as u64) << 2) | u64::from(bits >> 5)) + 1
}

impl ICache {
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            instrs: Vec::new(),
            generation: Vec::new(),
            has_code: Vec::new(),
            blocks: Blocks::new(),
        }
    }

    /// Sizes the per-page tables for the bus's RAM (once; not on the hot path).
    pub fn attach<B: Bus>(&mut self, bus: &B) {
        let pages = bus.ram().len().div_ceil(4096);
        if self.generation.len() != pages {
            self.generation = vec![0; pages];
            self.has_code = vec![false; pages];
            self.slots = vec![
                Slot {
                    key: 0,
                    generation: 0,
                    uop: Uop::GENERIC,
                };
                ENTRIES
            ];
            self.instrs = vec![Instruction::default(); ENTRIES];
            self.blocks.flush();
        }
    }

    /// Drops everything.
    pub fn flush(&mut self) {
        for s in &mut self.slots {
            s.key = 0;
        }
        self.blocks.flush();
    }

    /// The generation of RAM page `page`.
    #[inline(always)]
    pub fn generation(&self, page: usize) -> Option<u32> {
        self.generation.get(page).copied()
    }

    /// Notes that code was decoded from RAM page `page` (a write to it must invalidate) and
    /// returns the page's generation.
    pub fn mark_code(&mut self, page: usize) -> Option<u32> {
        *self.has_code.get_mut(page)? = true;
        self.generation.get(page).copied()
    }

    /// The slot of the instruction decoded at RAM offset `off` for a `bits`-bit decoder, if
    /// still valid.
    #[inline(always)]
    pub fn find(&self, off: usize, bits: u32) -> Option<usize> {
        let i = off & (ENTRIES - 1);
        let slot = self.slots.get(i)?;
        let page_gen = *self.generation.get(off >> 12)?;
        (slot.key == key(off, bits) && slot.generation == page_gen).then_some(i)
    }

    /// The pre-decoded instruction in slot `i` (from [`ICache::find`]).
    #[inline(always)]
    pub fn uop(&self, i: usize) -> &Uop {
        match self.slots.get(i) {
            Some(s) => &s.uop,
            None => &Uop::GENERIC,
        }
    }

    /// The iced instruction in slot `i` (from [`ICache::find`]).
    #[inline(always)]
    pub fn instr(&self, i: usize) -> Instruction {
        self.instrs.get(i).copied().unwrap_or_default()
    }

    /// Caches `instr` and its pre-decoded form `uop`; `instr` lies entirely in the page of
    /// `off`.
    #[inline]
    pub fn insert(&mut self, off: usize, bits: u32, uop: &Uop, instr: &Instruction) {
        let page = off >> 12;
        let (Some(&generation), Some(code)) =
            (self.generation.get(page), self.has_code.get_mut(page))
        else {
            return;
        };
        *code = true;
        let i = off & (ENTRIES - 1);
        if let (Some(slot), Some(ins)) = (self.slots.get_mut(i), self.instrs.get_mut(i)) {
            *slot = Slot {
                key: key(off, bits),
                generation,
                uop: *uop,
            };
            *ins = *instr;
        }
    }

    /// A write to RAM at `off`: the page's decoded instructions are stale. Returns whether
    /// the page held any.
    #[inline]
    pub fn note_write(&mut self, off: usize) -> bool {
        let page = off >> 12;
        if let Some(code) = self.has_code.get_mut(page)
            && *code
        {
            *code = false;
            self.generation[page] = self.generation[page].wrapping_add(1);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::run_bytes64;

    #[test]
    fn self_modifying_code_sees_its_own_write() {
        #[rustfmt::skip]
        let code = [
            0xb9, 0x02, 0x00, 0x00, 0x00,                   // mov ecx, 2
            0xb8, 0x01, 0x00, 0x00, 0x00,                   // l: mov eax, 1
            0xc6, 0x04, 0x25, 0x06, 0x00, 0x10, 0x00, 0x07, // mov byte [0x100006], 7
            0xff, 0xc9,                                     // dec ecx
            0x75, 0xef,                                     // jnz l
        ];
        let (cpu, _) = run_bytes64(&code, |_| {});
        assert_eq!(
            cpu.gpr[0], 7,
            "the second pass decodes the patched immediate"
        );
        assert!(
            cpu.counters.decode_misses > 6,
            "the patched instruction was decoded again"
        );
    }
}
