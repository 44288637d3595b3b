//! Property tests: the walker against the naive reference of `common::reference`, for every
//! format, on random tables (random bits, reserved bits included, over a small sparse memory)
//! and random accesses and contexts. Outcome, error code or exit qualification, addresses,
//! rights, attributes and the accessed/dirty side effects on memory must all agree.
//!
//! Each property also counts its outcomes and requires every kind (success, not present,
//! reserved bit or misconfiguration, rights violation) to occur, so that a generator that
//! drifted into testing one path only fails loudly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::reference::{self, EptEnd, EptOk, EptRef, GuestEnd, GuestOk};
use common::*;
use nestvisor_paging::*;
use proptest::prelude::*;
use std::cell::RefCell;
use x86::{Gpa, Gva, Hpa};

const CASES: u32 = 4000;

/// The seed of every property in this file.
const SEED: u64 = 0x6e65_7374_7669_736f;

/// Guest outcome in the reference's terms.
fn guest_outcome(
    r: Result<GuestTranslation<Gpa>, WalkError<PageFault, MemoryError<Gpa>>>,
) -> GuestEnd<u64> {
    match r {
        Ok(t) => GuestEnd::Ok(guest_ok(&t), Vec::new()),
        Err(WalkError::Fault(f)) => GuestEnd::PageFault {
            code: f.error_code,
            level: f.level,
        },
        Err(WalkError::Table(e)) => GuestEnd::Stopped(e.addr.raw()),
    }
}

fn guest_ok(t: &GuestTranslation<Gpa>) -> GuestOk {
    GuestOk {
        addr: t.addr.to_raw(),
        page_shift: t.size.shift(),
        level: t.level,
        write: t.rights.write,
        user: t.rights.user,
        exec: t.rights.execute,
        global: t.attrs.global,
        pat: t.attrs.pat_index,
        dirty: t.dirty,
    }
}

/// Drops the reference's update list, which the walker does not expose.
fn strip(end: GuestEnd<u64>) -> GuestEnd<u64> {
    match end {
        GuestEnd::Ok(ok, _) => GuestEnd::Ok(ok, Vec::new()),
        other => other,
    }
}

fn classify_guest(end: &GuestEnd<u64>) -> &'static str {
    match end {
        GuestEnd::Ok(..) => "ok",
        GuestEnd::PageFault { code, .. } if code & 8 != 0 => "reserved",
        GuestEnd::PageFault { code, .. } if code & 1 == 0 => "not present",
        GuestEnd::PageFault { .. } => "rights",
        GuestEnd::Stopped(_) => "unbacked",
    }
}

const GUEST_KINDS: [&str; 4] = ["ok", "reserved", "not present", "rights"];

#[test]
fn paging32_matches_reference() {
    let stats = Outcomes::default();
    let strategy = (
        tables(guest_entry(), &INDICES_1024, 4),
        prop::sample::select(POOL.to_vec()),
        address_32(),
        access(),
        context(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, root, va, access, ctx)| {
            let mut walked = mem.clone();
            let f = Paging32::new(Gpa::new(root), ctx);
            let got = guest_outcome(translate(&f, &mut walked, Gva::new(va), access));
            let mut expected_mem = mem.clone();
            let want = reference::guest_1d(&mut expected_mem, |read| {
                reference::walk_32(read, root, va, &ctx, access.kind, access.privilege)
            });
            let want = strip(want);
            stats.count(classify_guest(&want));
            prop_assert_eq!(got, want);
            prop_assert!(walked == expected_mem, "A/D side effects differ");
            Ok(())
        })
        .unwrap();
    stats.require(&GUEST_KINDS, 20);
}

#[test]
fn pae_matches_reference() {
    let stats = Outcomes::default();
    let strategy = (
        tables(guest_entry(), &INDICES_512, 8),
        prop::sample::select(POOL.to_vec()),
        prop::array::uniform4(prop::bool::weighted(0.9)),
        prop::collection::vec(guest_entry(), 4),
        address_512(2),
        access(),
        context(),
    );
    runner(CASES, SEED)
        .run(
            &strategy,
            |(mut mem, root, clean, raw_pdptes, va, access, ctx)| {
                // The PDPT at bytes 0x20..0x40 of a pool frame (indices the tables leave
                // empty); PDPTEs are made well-formed three times in four.
                let pdpt = root | 0x20;
                let mut pdptes = [0u64; 4];
                for i in 0..4 {
                    let mut e = raw_pdptes[i];
                    if clean[i] {
                        e &= 0x000f_ffff_ffff_f019;
                        e &= x86::addr::phys_mask(u32::from(ctx.maxphyaddr));
                    }
                    pdptes[i] = e;
                    mem.write(pdpt + 8 * i as u64, 8, e);
                }
                let loaded =
                    load_pdptes::<Gpa, _>(&mut Direct(&mut mem.clone()), pdpt, ctx.maxphyaddr);
                let want_load = reference::pdpte_check(&pdptes, ctx.maxphyaddr);
                match (&loaded, want_load) {
                    (Ok(p), None) => prop_assert_eq!(p.entries(), pdptes),
                    (Err(PdpteLoadError::Reserved(r)), Some(i)) => prop_assert_eq!(r.index, i),
                    (got, want) => prop_assert!(false, "PDPTE load {got:?} vs {want:?}"),
                }
                let Ok(loaded) = loaded else {
                    stats.count("pdpte #GP");
                    return Ok(());
                };
                let va = va & 0xffff_ffff;
                let mut walked = mem.clone();
                let f = Pae::<Gpa>::new(loaded, ctx);
                let got = guest_outcome(translate(&f, &mut walked, Gva::new(va), access));
                let mut expected_mem = mem.clone();
                let want = strip(reference::guest_1d(&mut expected_mem, |read| {
                    reference::walk_pae(read, &pdptes, va, &ctx, access.kind, access.privilege)
                }));
                stats.count(classify_guest(&want));
                prop_assert_eq!(got, want);
                prop_assert!(walked == expected_mem, "A/D side effects differ");
                Ok(())
            },
        )
        .unwrap();
    stats.require(&GUEST_KINDS, 20);
    stats.require(&["pdpte #GP"], 20);
}

fn long_mode_matches_reference<const LEVELS: u8>() {
    let stats = Outcomes::default();
    let strategy = (
        tables(guest_entry(), &INDICES_512, 8),
        prop::sample::select(POOL.to_vec()),
        address_512(u32::from(LEVELS)),
        access(),
        context(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, root, va, access, ctx)| {
            let mut walked = mem.clone();
            let f = LongMode::<Gpa, LEVELS>::new(Gpa::new(root), ctx);
            let got = guest_outcome(translate(&f, &mut walked, Gva::new(va), access));
            let mut expected_mem = mem.clone();
            let want = strip(reference::guest_1d(&mut expected_mem, |read| {
                reference::walk_long(read, root, LEVELS, va, &ctx, access.kind, access.privilege)
            }));
            stats.count(classify_guest(&want));
            prop_assert_eq!(got, want);
            prop_assert!(walked == expected_mem, "A/D side effects differ");
            Ok(())
        })
        .unwrap();
    stats.require(&GUEST_KINDS, 20);
}

#[test]
fn paging4_matches_reference() {
    long_mode_matches_reference::<4>();
}

#[test]
fn paging5_matches_reference() {
    long_mode_matches_reference::<5>();
}

// ---------------------------------------------------------------------------------------------
// EPT
// ---------------------------------------------------------------------------------------------

/// A random EPT configuration (always a valid EPTP) and the matching reference configuration.
fn ept_config(root: BoxedStrategy<u64>) -> impl Strategy<Value = (Ept<Gpa, Hpa>, EptRef)> {
    (
        root,
        prop::sample::select(vec![4u8, 5]),
        any::<[bool; 4]>(),
        prop::sample::select(vec![36u8, 40, 46, 52]),
    )
        .prop_map(|(root, levels, b, maxphyaddr)| ept_with_reference(root, levels, b, maxphyaddr))
}

fn ept_origin() -> impl Strategy<Value = EptOrigin> {
    prop_oneof![
        Just(EptOrigin::NoLinear),
        Just(EptOrigin::GuestPagingStructure),
        Just(EptOrigin::GuestLinear { user: false }),
        Just(EptOrigin::GuestLinear { user: true }),
    ]
}

fn ept_ok(t: &EptTranslation<Hpa>) -> EptOk {
    EptOk {
        addr: t.addr.raw(),
        page_shift: t.size.shift(),
        level: t.level,
        rights: [
            t.rights.read,
            t.rights.write,
            t.rights.execute,
            t.rights.user_execute,
        ],
        memtype: t.attrs.memory_type as u64,
        ipat: t.attrs.ignore_pat,
        sve: t.attrs.suppress_ve,
        dirty: t.dirty,
    }
}

fn ept_end(fault: EptFault) -> EptEnd {
    match fault {
        EptFault::Violation(v) => EptEnd::Violation {
            qual: v.exit_qualification(),
            level: v.level,
        },
        EptFault::Misconfig { level } => EptEnd::Misconfig { level },
    }
}

fn classify_ept(end: &EptEnd) -> &'static str {
    match end {
        EptEnd::Ok(_) => "ok",
        EptEnd::Violation { qual, .. } if qual & 0x38 == 0 => "not present",
        EptEnd::Violation { .. } => "rights",
        EptEnd::Misconfig { .. } => "misconfig",
        EptEnd::Unbacked(_) => "unbacked",
    }
}

#[test]
fn ept_matches_reference() {
    let stats = Outcomes::default();
    let strategy = (
        tables(ept_entry(), &INDICES_512, 8),
        ept_config(prop::sample::select(POOL.to_vec()).boxed()),
        address_512(5),
        prop::sample::select(vec![AccessKind::Read, AccessKind::Write, AccessKind::Fetch]),
        ept_origin(),
    );
    runner(CASES, SEED)
        .run(&strategy, |(mem, (ept, cfg), gpa, kind, origin)| {
            let mut walked = mem.clone();
            let access = EptAccess::new(kind, origin);
            let got = match translate(&ept, &mut walked, Gpa::new(gpa), access) {
                Ok(t) => EptEnd::Ok(ept_ok(&t)),
                Err(WalkError::Fault(f)) => ept_end(f),
                Err(WalkError::Table(e)) => EptEnd::Unbacked(e.addr.raw()),
            };
            let mut expected_mem = mem.clone();
            let want = reference::ept_walk(&mut expected_mem, &cfg, gpa, kind, origin);
            stats.count(classify_ept(&want));
            prop_assert_eq!(got, want);
            prop_assert!(walked == expected_mem, "A/D side effects differ");
            Ok(())
        })
        .unwrap();
    stats.require(&["ok", "not present", "rights", "misconfig"], 20);
}

// ---------------------------------------------------------------------------------------------
// What a TLB relies on
// ---------------------------------------------------------------------------------------------

/// Every access kind and privilege.
fn all_accesses() -> Vec<Access> {
    let kinds = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch];
    let who = [Privilege::User, Privilege::Supervisor, Privilege::Implicit];
    kinds
        .iter()
        .flat_map(|&k| who.iter().map(move |&p| Access::new(k, p)))
        .collect()
}

/// After a successful walk, checking any other access against the cached rights gives the same
/// answer as walking again: a TLB may cache the rights and re-check instead of walking.
#[test]
fn cached_rights_decide_like_a_walk() {
    let strategy = (
        tables(guest_entry(), &INDICES_512, 8),
        prop::sample::select(POOL.to_vec()),
        address_512(4),
        access(),
        context(),
    );
    let checked = RefCell::new(0u32);
    runner(CASES, SEED)
        .run(&strategy, |(mut mem, root, va, access, ctx)| {
            let f = Paging4::new(Gpa::new(root), ctx);
            let Ok(t) = translate(&f, &mut mem, Gva::new(va), access) else {
                return Ok(());
            };
            for other in all_accesses() {
                let cached = f.check(other, t.rights, t.level).is_ok();
                let walked = translate(&f, &mut mem.clone(), Gva::new(va), other).is_ok();
                prop_assert_eq!(cached, walked, "{:?} after {:?}", other, access);
                *checked.borrow_mut() += 1;
            }
            Ok(())
        })
        .unwrap();
    assert!(*checked.borrow() > 1000);
}

/// The same for EPT, across access kinds and origins.
#[test]
fn cached_ept_rights_decide_like_a_walk() {
    let strategy = (
        tables(ept_entry(), &INDICES_512, 8),
        ept_config(prop::sample::select(POOL.to_vec()).boxed()),
        address_512(5),
        ept_origin(),
    );
    let checked = RefCell::new(0u32);
    runner(CASES, SEED)
        .run(&strategy, |(mut mem, (ept, _), gpa, origin)| {
            let read = EptAccess::new(AccessKind::Read, origin);
            let Ok(t) = translate(&ept, &mut mem, Gpa::new(gpa), read) else {
                return Ok(());
            };
            for kind in [AccessKind::Read, AccessKind::Write, AccessKind::Fetch] {
                let other = EptAccess::new(kind, origin);
                let cached = ept.check(other, t.rights, t.level).is_ok();
                let walked = translate(&ept, &mut mem.clone(), Gpa::new(gpa), other).is_ok();
                prop_assert_eq!(cached, walked, "{:?}", other);
                *checked.borrow_mut() += 1;
            }
            Ok(())
        })
        .unwrap();
    assert!(*checked.borrow() > 1000);
}
