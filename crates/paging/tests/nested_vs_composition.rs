//! Property tests of the two-dimensional walk: `translate_nested` against the composition of
//! the reference guest walk with reference EPT walks (`common::reference::nested`): every guest
//! entry read through EPT, the guest flag writes checked for EPT write access, the final
//! guest-physical address translated, then the guest flags written. Guest 32-bit, PAE and
//! 4-level paging over 4- and 5-level EPT with random tables, accesses, contexts and EPT
//! configurations; outcome, fault dimension and stage, exit qualification, addresses and
//! memory side effects must agree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::reference::{self, EptEnd, EptOk, EptRef, GuestOk, NestedEnd, Stage};
use common::*;
use nestvisor_paging::*;
use proptest::prelude::*;
use x86::{Gpa, Gva, Hpa};

const CASES: u32 = 4000;

/// The seed of every property in this file.
const SEED: u64 = 0x6e65_7374_7669_736f;

/// The kind of a 2D outcome, for [`Outcomes`].
fn kind(end: &NestedEnd) -> &'static str {
    match end {
        NestedEnd::Ok { .. } => "ok",
        NestedEnd::PageFault { .. } => "#PF",
        NestedEnd::Ept {
            end: EptEnd::Misconfig { .. },
            ..
        } => "EPT misconfig",
        NestedEnd::Ept {
            stage: Stage::Final,
            ..
        } => "EPT violation, final",
        NestedEnd::Ept { .. } => "EPT violation, guest table",
        NestedEnd::Unbacked(_) => "unbacked",
    }
}

/// The EPT tables of level `level` live in their own frame, so that random entries are random
/// variations of a working EPT rather than noise: an entry of level `l` mostly references the
/// table of level `l − 1` (or, at level 1, a guest frame; at levels 2 and 3 sometimes a large
/// guest page).
const EPT_BASE: u64 = 0x8000_0000;
/// Indices of the EPT tables that carry entries: those the guest pool's guest-physical
/// addresses use (0–3) and the last one.
const EPT_INDICES: [u64; 5] = [0, 1, 2, 3, 511];

fn ept_frame(level: u8) -> u64 {
    EPT_BASE + (u64::from(level) - 1) * 0x1000
}

fn guest_frames() -> Vec<u64> {
    POOL.iter().map(|p| p + GUEST_OFFSET).collect()
}

/// One EPT entry of `level`, mostly well-formed.
fn ept_entry_at(level: u8) -> BoxedStrategy<u64> {
    let large_targets = vec![
        GUEST_OFFSET,
        GUEST_OFFSET + 0x20_0000,
        GUEST_OFFSET + 0x4000_0000,
    ];
    let target = if level == 1 {
        prop_oneof![
            30 => prop::sample::select(guest_frames()).prop_map(|b| (b, false)),
            1 => prop::sample::select(POOL.to_vec()).prop_map(|b| (b, false)),
            1 => Just((UNBACKED, false)),
        ]
        .boxed()
    } else if level >= 4 {
        prop_oneof![
            20 => Just((ept_frame(level - 1), false)),
            1 => Just((UNBACKED, false)),
        ]
        .boxed()
    } else {
        let next = ept_frame(level - 1);
        prop_oneof![
            16 => Just((next, false)),
            3 => prop::sample::select(large_targets).prop_map(|b| (b, true)),
            1 => Just((UNBACKED, false)),
        ]
        .boxed()
    };
    (
        target,
        prop_oneof![12 => Just(7u64), 2 => Just(1u64), 2 => Just(3u64), 2 => Just(5u64), 1 => 0u64..8],
        prop_oneof![12 => Just(6u64), 1 => 0u64..8],
        any::<bool>(),
        0u64..16,
        prop_oneof![12 => Just(0u64), 1 => (12u32..64).prop_map(|b| 1u64 << b)],
    )
        .prop_map(move |((base, large), rwx, mt, ipat, bits_11_8, noise)| {
            let leaf = level == 1 || large;
            let mut e = base | rwx | (bits_11_8 << 8) | noise;
            if leaf {
                e |= (mt << 3) | (u64::from(ipat) << 6);
            }
            if large {
                e |= 1 << 7;
            }
            e
        })
        .boxed()
}

/// Host memory: the per-level EPT tables, and the guest tables in the pool frames moved up by
/// `GUEST_OFFSET`.
fn memory(guest_width: usize) -> impl Strategy<Value = TestMem> {
    let guest_indices: &'static [u64] = if guest_width == 4 {
        &INDICES_1024
    } else {
        &INDICES_512
    };
    let ept_entries: Vec<BoxedStrategy<u64>> = (1..=5u8)
        .flat_map(|level| EPT_INDICES.iter().map(move |_| ept_entry_at(level)))
        .collect();
    (
        ept_entries,
        tables_at(tame_guest_entry(), guest_indices, guest_width, GUEST_OFFSET),
    )
        .prop_map(|(entries, mut mem)| {
            for (i, e) in entries.into_iter().enumerate() {
                let level = (i / EPT_INDICES.len()) as u8 + 1;
                let index = EPT_INDICES[i % EPT_INDICES.len()];
                mem.add_frame(ept_frame(level));
                mem.write(ept_frame(level) + index * 8, 8, e);
            }
            mem
        })
}

fn ept_config() -> impl Strategy<Value = (Ept<Gpa, Hpa>, EptRef)> {
    (
        prop::sample::select(vec![4u8, 5]),
        any::<[bool; 4]>(),
        prop::sample::select(vec![36u8, 40, 46, 52]),
    )
        .prop_map(|(levels, b, maxphyaddr)| {
            ept_with_reference(ept_frame(levels), levels, b, maxphyaddr)
        })
}

fn outcome(r: Result<NestedTranslation<Gpa, Hpa>, NestedFault<Gpa, Hpa>>) -> NestedEnd {
    match r {
        Ok(t) => {
            let g = &t.guest;
            let e = &t.ept;
            NestedEnd::Ok {
                guest: GuestOk {
                    addr: g.addr.raw(),
                    page_shift: g.size.shift(),
                    level: g.level,
                    write: g.rights.write,
                    user: g.rights.user,
                    exec: g.rights.execute,
                    global: g.attrs.global,
                    pat: g.attrs.pat_index,
                    dirty: g.dirty,
                },
                ept: EptOk {
                    addr: e.addr.raw(),
                    page_shift: e.size.shift(),
                    level: e.level,
                    rights: [
                        e.rights.read,
                        e.rights.write,
                        e.rights.execute,
                        e.rights.user_execute,
                    ],
                    memtype: e.attrs.memory_type as u64,
                    ipat: e.attrs.ignore_pat,
                    sve: e.attrs.suppress_ve,
                    dirty: e.dirty,
                },
            }
        }
        Err(NestedFault::Guest(pf)) => NestedEnd::PageFault {
            code: pf.error_code,
            level: pf.level,
        },
        Err(NestedFault::Ept { fault, gpa, stage }) => NestedEnd::Ept {
            end: match fault {
                EptFault::Violation(v) => EptEnd::Violation {
                    qual: v.exit_qualification(),
                    level: v.level,
                },
                EptFault::Misconfig { level } => EptEnd::Misconfig { level },
            },
            gpa: gpa.raw(),
            stage: match stage {
                EptStage::GuestTable { level } => Stage::GuestTable(level),
                EptStage::Final => Stage::Final,
                EptStage::PdpteLoad => panic!("no PDPTE load in a walk"),
            },
        },
        Err(NestedFault::Memory(e)) => NestedEnd::Unbacked(e.addr.raw()),
    }
}

const KINDS: [&str; 5] = [
    "ok",
    "#PF",
    "EPT misconfig",
    "EPT violation, final",
    "EPT violation, guest table",
];

#[test]
fn paging4_over_ept_matches_composition() {
    let stats = Outcomes::default();
    let strategy = (
        memory(8),
        ept_config(),
        prop::sample::select(POOL.to_vec()),
        address_512(4),
        access(),
        context(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, (ept, cfg), root, va, access, ctx)| {
            let mut walked = mem.clone();
            let guest = Paging4::new(Gpa::new(root), ctx);
            let got = outcome(translate_nested(
                &guest,
                &ept,
                &mut walked,
                Gva::new(va),
                access,
            ));
            let mut expected_mem = mem.clone();
            let want = reference::nested(&mut expected_mem, &cfg, access.kind, |read| {
                reference::walk_long(read, root, 4, va, &ctx, access.kind, access.privilege)
            });
            stats.count(kind(&want));
            prop_assert_eq!(got, want);
            prop_assert!(walked == expected_mem, "A/D side effects differ");
            Ok(())
        })
        .unwrap();
    stats.require(&KINDS, 10);
}

#[test]
fn paging32_over_ept_matches_composition() {
    let stats = Outcomes::default();
    let strategy = (
        memory(4),
        ept_config(),
        prop::sample::select(POOL.to_vec()),
        address_32(),
        access(),
        context(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, (ept, cfg), root, va, access, ctx)| {
            let mut walked = mem.clone();
            let guest = Paging32::new(Gpa::new(root), ctx);
            let got = outcome(translate_nested(
                &guest,
                &ept,
                &mut walked,
                Gva::new(va),
                access,
            ));
            let mut expected_mem = mem.clone();
            let want = reference::nested(&mut expected_mem, &cfg, access.kind, |read| {
                reference::walk_32(read, root, va, &ctx, access.kind, access.privilege)
            });
            stats.count(kind(&want));
            prop_assert_eq!(got, want);
            prop_assert!(walked == expected_mem, "A/D side effects differ");
            Ok(())
        })
        .unwrap();
    stats.require(&KINDS, 10);
}

#[test]
fn pae_over_ept_matches_composition() {
    let stats = Outcomes::default();
    let strategy = (
        memory(8),
        ept_config(),
        prop::collection::vec(guest_entry(), 4),
        address_512(2),
        access(),
        context(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, (ept, cfg), raw, va, access, ctx)| {
            // Well-formed PDPTE registers (as loaded, or from the VMCS).
            let mut pdptes = [0u64; 4];
            for (p, e) in pdptes.iter_mut().zip(&raw) {
                *p = e & 0x000f_ffff_ffff_f019 & x86::addr::phys_mask(u32::from(ctx.maxphyaddr));
            }
            let regs = Pdptes::new(pdptes, ctx.maxphyaddr).unwrap();
            let va = va & 0xffff_ffff;
            let mut walked = mem.clone();
            let guest = Pae::<Gpa>::new(regs, ctx);
            let got = outcome(translate_nested(
                &guest,
                &ept,
                &mut walked,
                Gva::new(va),
                access,
            ));
            let mut expected_mem = mem.clone();
            let want = reference::nested(&mut expected_mem, &cfg, access.kind, |read| {
                reference::walk_pae(read, &pdptes, va, &ctx, access.kind, access.privilege)
            });
            stats.count(kind(&want));
            prop_assert_eq!(got, want);
            prop_assert!(walked == expected_mem, "A/D side effects differ");
            Ok(())
        })
        .unwrap();
    stats.require(&KINDS, 10);
}
