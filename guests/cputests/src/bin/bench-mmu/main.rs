//! bench-mmu: an MMU/TLB stress kernel for comparing CPU models (issue 3 item 7). Each of
//! `rounds=N` rounds rewrites the PTEs of a 64-page window so that every page maps a different
//! frame than before (a rotation), reloads CR3 (dropping every non-global translation, SDM Vol.
//! 3A §5.10.4.1), then touches each page of the window in turn, reading and writing one
//! quadword: a fresh page walk every few instructions. Prints a checksum of everything read.

#![no_std]
#![no_main]

use cputests::out;
use cputests::paging::{self, ADDR_MASK, AddressSpace, RW, SIZE_4K, XD, virt};
use cputests::report::{EXIT_USAGE, Fnv, Report};
use rt::BootInfo;

/// The window: PML4 slot 4.
const WINDOW: u64 = 0x0000_0200_0000_0000;
const PAGES: u64 = 64;
const DEFAULT_ROUNDS: u64 = 1000;

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut report = Report::new("bench-mmu");
    let Some(rounds) = cputests::args::number(boot.cmdline(), "rounds", DEFAULT_ROUNDS) else {
        out!(report, "usage: rounds=N");
        rt::exit(EXIT_USAGE);
    };
    let space = AddressSpace::new();
    let mut frames = [0u64; PAGES as usize];
    for (i, frame) in frames.iter_mut().enumerate() {
        *frame = paging::alloc_frame();
        // SAFETY: a fresh pool frame, mapped at KERNEL_VMA.
        unsafe { virt(*frame).write_volatile(i as u64) };
        space.map(WINDOW + i as u64 * SIZE_4K, *frame, SIZE_4K, RW | XD);
    }
    // The PTEs of the window, found once (they sit in one page table).
    let ptes: [*mut u64; PAGES as usize] = core::array::from_fn(|i| {
        space
            .entry(WINDOW + i as u64 * SIZE_4K, 1, false)
            .expect("mapped")
    });
    // SAFETY: the new hierarchy shares the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(0, false) };

    let mut hash = Fnv::default();
    for round in 0..rounds {
        for (i, pte) in ptes.iter().enumerate() {
            let frame = frames[(i + round as usize) % PAGES as usize];
            // SAFETY: `pte` is a PTE of the live hierarchy; the window is only touched below.
            unsafe { pte.write_volatile((pte.read_volatile() & !ADDR_MASK) | frame) };
        }
        // SAFETY: the same hierarchy: drops the window's stale translations.
        unsafe { space.load(0, false) };
        for i in 0..PAGES {
            let p = (WINDOW + i * SIZE_4K) as *mut u64;
            // SAFETY: the window is mapped to pool frames, writable.
            let v = unsafe { p.read_volatile() };
            hash.u64(v);
            // SAFETY: as above.
            unsafe { p.write_volatile(v.wrapping_mul(31).wrapping_add(round)) };
        }
    }
    out!(
        report,
        "bench-mmu: rounds={rounds} pages={PAGES} checksum={:016x}",
        hash.0
    );
    // Every frame's first quadword went through `rounds` updates, each through a different PTE.
    let total: u64 = frames
        .iter()
        .map(|&f| {
            // SAFETY: pool frames, mapped at KERNEL_VMA.
            unsafe { virt(f).read_volatile() }
        })
        .fold(0, u64::wrapping_add);
    out!(report, "bench-mmu: frame-sum={total:016x}");
    report.finish()
}
