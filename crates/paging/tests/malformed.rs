//! Malformed input never panics, never loops, and never writes anything but accessed and dirty
//! flags: every format and the two-dimensional walk, over memory full of random bytes (so
//! cyclic tables, all-ones entries and tables outside memory all occur), random roots
//! (unbacked ones included), random contexts and EPT configurations.
//!
//! Boundedness is checked by counting memory accesses: a one-dimensional walk reads at most one
//! entry per level and re-reads each entry at most once to set its flags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nestvisor_paging::*;
use proptest::prelude::*;
use x86::paging::Eptp;
use x86::{Gpa, Gva, Hpa};

const CASES: u32 = 2000;

/// The seed of every property in this file.
const SEED: u64 = 0x6261_645f_696e_7075;

/// Memory of a few frames of random bytes (sometimes all ones), with their addresses.
fn garbage() -> impl Strategy<Value = TestMem> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                0u64,
                0x1000,
                0x2000,
                0x20_0000,
                0x4000_0000,
                0x8000_0000,
            ]),
            prop_oneof![
                4 => prop::collection::vec(any::<u8>(), 4096),
                1 => Just(vec![0xff; 4096]),
            ],
        ),
        1..6,
    )
    .prop_map(|frames| {
        let mut mem = TestMem::default();
        for (addr, bytes) in frames {
            mem.frames.insert(addr, bytes);
        }
        mem
    })
}

fn root() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(vec![0u64, 0x1000, 0x2000, 0x20_0000, 0x4000_0000, 0x8000_0000]),
        1 => any::<u64>(),
    ]
}

/// Counts accesses, and forwards them to the test memory.
struct Counting<'a> {
    mem: &'a mut TestMem,
    reads: u32,
}

impl<A: Address> Memory<A> for Counting<'_> {
    fn read_u32(&mut self, addr: A) -> Result<u32, MemoryError<A>> {
        self.reads += 1;
        self.mem.read_u32(addr)
    }
    fn read_u64(&mut self, addr: A) -> Result<u64, MemoryError<A>> {
        self.reads += 1;
        self.mem.read_u64(addr)
    }
    fn write_u32(&mut self, addr: A, value: u32) -> Result<(), MemoryError<A>> {
        self.mem.write_u32(addr, value)
    }
    fn write_u64(&mut self, addr: A, value: u64) -> Result<(), MemoryError<A>> {
        self.mem.write_u64(addr, value)
    }
}

/// Every byte that changed changed only in the given flag bits of an aligned entry.
fn only_flags_changed(before: &TestMem, after: &TestMem, width: usize, flags: u64) -> bool {
    before.frames.keys().eq(after.frames.keys())
        && before.frames.keys().all(|&base| {
            (0..4096 / width).all(|i| {
                let addr = base + (i * width) as u64;
                let old = before.read(addr, width).unwrap();
                let new = after.read(addr, width).unwrap();
                old == new || ((old ^ new) & !flags == 0 && new & old == old)
            })
        })
}

const GUEST_AD: u64 = (1 << 5) | (1 << 6);
const EPT_AD: u64 = (1 << 8) | (1 << 9);

fn ept_from(raw: u64, caps: u64, maxphyaddr: u8, mbec: bool) -> Option<Ept<Gpa, Hpa>> {
    Ept::new(Eptp::new(raw), &EptCaps::from_msr(caps), maxphyaddr, mbec).ok()
}

#[test]
fn guest_walks_on_garbage() {
    let strategy = (
        garbage(),
        root(),
        any::<u64>(),
        access(),
        context(),
        0u8..4,
        any::<u8>(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, root, va, access, mut ctx, mode, odd)| {
            // The context's fields are public: out-of-range widths must not panic either.
            if odd % 4 == 0 {
                ctx.maxphyaddr = odd;
            }
            let mut after = mem.clone();
            let mut counting = Counting {
                mem: &mut after,
                reads: 0,
            };
            let gva = Gva::new(va);
            let (levels, width) = match mode {
                0 => {
                    let f = Paging32::new(Gpa::new(root), ctx);
                    let _ = translate(&f, &mut counting, gva, access);
                    (2, 4)
                }
                1 => {
                    let _ = translate(
                        &Paging4::new(Gpa::new(root), ctx),
                        &mut counting,
                        gva,
                        access,
                    );
                    (4, 8)
                }
                2 => {
                    let _ = translate(
                        &Paging5::new(Gpa::new(root), ctx),
                        &mut counting,
                        gva,
                        access,
                    );
                    (5, 8)
                }
                _ => {
                    let loaded =
                        load_pdptes::<Gpa, _>(&mut Direct(&mut counting), root, ctx.maxphyaddr);
                    let before_walk = counting.reads;
                    if let Ok(pdptes) = loaded {
                        let f = Pae::<Gpa>::new(pdptes, ctx);
                        let _ = translate(&f, &mut counting, gva, access);
                    }
                    counting.reads -= before_walk;
                    (2, 8)
                }
            };
            prop_assert!(counting.reads <= 2 * levels, "{} reads", counting.reads);
            prop_assert!(only_flags_changed(&mem, &after, width, GUEST_AD));
            Ok(())
        })
        .unwrap();
}

#[test]
fn ept_walks_on_garbage() {
    let strategy = (
        garbage(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::sample::select(vec![32u8, 36, 46, 52]),
        any::<bool>(),
        access(),
    );
    runner(CASES, SEED)
        .run(
            &strategy,
            |(mem, eptp, caps, gpa, maxphyaddr, mbec, access)| {
                // Random EPTP values are mostly refused; make half of them plausible.
                let eptp = if gpa & 1 == 0 {
                    (eptp & 0x000f_ffff_ffff_f000) | (3 << 3) | 6 | (eptp & (1 << 6))
                } else {
                    eptp
                };
                let Some(ept) = ept_from(eptp, caps | (1 << 6) | (1 << 14), maxphyaddr, mbec)
                else {
                    return Ok(());
                };
                let mut after = mem.clone();
                let mut counting = Counting {
                    mem: &mut after,
                    reads: 0,
                };
                let origin = match gpa >> 62 {
                    0 => EptOrigin::NoLinear,
                    1 => EptOrigin::GuestPagingStructure,
                    2 => EptOrigin::GuestLinear { user: false },
                    _ => EptOrigin::GuestLinear { user: true },
                };
                let a = EptAccess::new(access.kind, origin);
                let _ = translate(&ept, &mut counting, Gpa::new(gpa), a);
                prop_assert!(counting.reads <= 2 * u32::from(ept.levels()));
                prop_assert!(only_flags_changed(&mem, &after, 8, EPT_AD));
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn nested_walks_on_garbage() {
    let strategy = (
        garbage(),
        root(),
        root(),
        any::<u64>(),
        access(),
        context(),
        any::<bool>(),
    );
    runner(CASES, SEED)
        .run(
            &strategy,
            |(mem, guest_root, ept_root, va, access, ctx, ad)| {
                let eptp = (ept_root & 0x000f_ffff_f000) | (3 << 3) | 6 | (u64::from(ad) << 6);
                let caps = 1 | (1 << 6) | (1 << 7) | (1 << 14) | (1 << 17) | (1 << 21);
                let Some(ept) = ept_from(eptp, caps, 46, va & 1 == 1) else {
                    return Ok(());
                };
                let mut after = mem.clone();
                let mut counting = Counting {
                    mem: &mut after,
                    reads: 0,
                };
                let guest = Paging4::new(Gpa::new(guest_root), ctx);
                let _ = translate_nested(&guest, &ept, &mut counting, Gva::new(va), access);
                // Each of the 4 guest entries and the final address: one EPT walk each (4 reads
                // and up to 4 flag re-reads), plus the guest entry itself and its flag re-read.
                prop_assert!(counting.reads <= 5 * 8 + 4 * 2, "{} reads", counting.reads);
                prop_assert!(only_flags_changed(&mem, &after, 8, GUEST_AD | EPT_AD));
                Ok(())
            },
        )
        .unwrap();
}
