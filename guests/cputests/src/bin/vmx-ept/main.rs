//! vmx-ept: the extended page-table mechanism and VPIDs (SDM Vol. 3C ch. 29 "VMX Support for
//! Address Translation": §29.1 VPIDs, §29.3.2 EPT translation, §29.3.3 EPT-induced VM exits
//! (violations, misconfigurations), §29.3.5 accessed and dirty flags, §29.4 caching
//! translation information and INVEPT/INVVPID; §28.2.1 Table 28-7, the EPT-violation exit
//! qualification; §25.6.11 the EPT pointer; §27.3.1 unrestricted guests).
//!
//! The host builds an EPT (2-MiB identity pages for the first GiB, the 2-MiB region around each
//! test frame split into 4-KiB pages, a 1-GiB page aliasing GPA 1 GiB to HPA 0) and gives the
//! guest its own page tables (the runtime's mappings plus test addresses in PML4 slot 2).
//!
//! - Translation through 4-KiB, 2-MiB and 1-GiB EPT pages.
//! - Violations: an unmapped GPA (qualification bit 0 read, bits 5:3 = 0, bits 7 and 8 set:
//!   linear address valid, final translation; GUEST_PHYSICAL_ADDRESS and GUEST_LINEAR_ADDRESS),
//!   a write to a read-only page (bit 1, bits 5:3 = 001), a fetch from a non-executable page
//!   (bit 2, bits 5:3 = 011), a read of an execute-only page (bits 5:3 = 100) while a call
//!   into it runs; a violation on the guest's PTE during the walk (bit 8 clear, bits 1:0 both
//!   set with EPT A/D flags on, where paging-structure accesses count as writes).
//! - Misconfigurations (exit 49): write without read, a reserved memory type.
//! - A/D flags: with EPTP bit 6 a read sets A and a write sets D in the EPT leaf; without it
//!   neither is set.
//! - Caching: eight pages read in three rounds, their translations changed between rounds:
//!   with VPID 1 (and EPT) a changed EPT leaf or guest PTE may still be used until INVEPT
//!   (single-context, all-context) or INVVPID (individual-address, single-context, all-context,
//!   single-context retaining globals) — each page reads its old or new value and at least one
//!   its old value — and every page reads its newest value after the invalidation; with VPIDs
//!   off every entry and exit flushes (§29.4.3.3), so the change is seen at once.
//! - An unrestricted guest in real mode (CR0.PE = PG = 0) runs 16-bit code under EPT.

#![no_std]
#![no_main]

mod asm;

use asm::*;
use core::sync::atomic::Ordering;
use cputests::out;
use cputests::paging::{AddressSpace, RW, SIZE_4K, alloc_frame, virt};
use cputests::report::Report;
use cputests::vmx::fields::*;
use cputests::vmx::insn::{self, Outcome};
use cputests::vmx::{self, Caps, Exit, Vm, entry, proc2, read, reason, write};
use rt::BootInfo;

/// EPT entry bits (§29.3.2, Tables 29-1 to 29-6).
const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
/// Memory type WB (6) in bits 5:3 of a leaf.
const WB: u64 = 6 << 3;
/// Page size (a 1-GiB or 2-MiB leaf).
const LARGE: u64 = 1 << 7;
/// Accessed and dirty flags (with EPTP bit 6).
const ACCESSED: u64 = 1 << 8;
const DIRTY: u64 = 1 << 9;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;

/// The test's linear addresses: PML4 slot 2 of the guest's page tables.
const VA: u64 = 0x0000_0100_0000_0000;

/// An EPT hierarchy built from pool frames.
struct Ept {
    pml4: u64,
}

fn slot(table: u64, index: u64) -> *mut u64 {
    virt(table).wrapping_add(index as usize)
}

fn get(p: *mut u64) -> u64 {
    // SAFETY: `p` points into an EPT frame of the pool.
    unsafe { p.read_volatile() }
}

fn put(p: *mut u64, v: u64) {
    // SAFETY: as `get`.
    unsafe { p.write_volatile(v) }
}

impl Ept {
    /// Identity map of GPA 0–1 GiB with 2-MiB pages, GPA 1–2 GiB → HPA 0–1 GiB with a 1-GiB
    /// page.
    fn new() -> Ept {
        let pml4 = alloc_frame();
        let pdpt = alloc_frame();
        let pd = alloc_frame();
        put(slot(pml4, 0), pdpt | R | W | X);
        put(slot(pdpt, 0), pd | R | W | X);
        for i in 0..512 {
            put(slot(pd, i), (i * MIB2) | R | W | X | WB | LARGE);
        }
        put(slot(pdpt, 1), R | W | X | WB | LARGE);
        Ept { pml4 }
    }

    /// The EPT pointer: WB, 4-level walk, A/D flags when `ad`.
    fn eptp(&self, ad: bool) -> u64 {
        self.pml4 | 6 | 3 << 3 | if ad { 1 << 6 } else { 0 }
    }

    /// The 4-KiB leaf for `gpa` (< 1 GiB), splitting its 2-MiB page into an identity page
    /// table first.
    fn leaf(&self, gpa: u64) -> *mut u64 {
        let pdpt = get(slot(self.pml4, 0)) & ADDR;
        let pd = get(slot(pdpt, 0)) & ADDR;
        let pde = slot(pd, gpa >> 21 & 0x1FF);
        if get(pde) & LARGE != 0 {
            let pt = alloc_frame();
            let base = gpa & !(MIB2 - 1);
            for i in 0..512 {
                put(slot(pt, i), (base + i * SIZE_4K) | R | W | X | WB);
            }
            put(pde, pt | R | W | X);
        }
        slot(get(pde) & ADDR, gpa >> 12 & 0x1FF)
    }

    /// Makes `gpa`'s 4-KiB leaf map `hpa` with `flags` (WB added when readable or executable).
    fn map(&self, gpa: u64, hpa: u64, flags: u64) {
        put(self.leaf(gpa), hpa | flags);
    }
}

/// A frame whose first quadword is `value`: its physical address.
fn frame_with(value: u64) -> u64 {
    let pa = alloc_frame();
    put(virt(pa), value);
    pa
}

/// A guest address space with `VA + 4096 * i` mapped to each GPA of `gpas`.
fn guest_space(gpas: &[u64]) -> AddressSpace {
    let space = AddressSpace::new();
    for (i, &gpa) in gpas.iter().enumerate() {
        space.map(VA + SIZE_4K * i as u64, gpa, SIZE_4K, RW);
    }
    space
}

fn out_of(i: usize) -> u64 {
    OUT[i].load(Ordering::Relaxed)
}

/// A VM with EPT (and VPID 1 when `vpid`) whose guest runs `guest(arg)` in `space`.
fn ept_vm(
    c: &Caps,
    ept: &Ept,
    ad: bool,
    vpid: bool,
    space: &AddressSpace,
    guest: unsafe extern "C" fn(u64),
    arg: u64,
) -> Vm {
    for o in &OUT {
        o.store(0, Ordering::Relaxed);
    }
    let vm = Vm::new(c, guest, arg);
    vm.enable_secondary(proc2::ENABLE_EPT | if vpid { proc2::ENABLE_VPID } else { 0 });
    write(EPT_POINTER, ept.eptp(ad));
    if vpid {
        write(VIRTUAL_PROCESSOR_ID, 1);
        drop_vpid_1();
    }
    write(GUEST_CR3, space.pml4);
    vm
}

/// Drops every translation tagged with VPID 1: each case starts from nothing cached (a new
/// VMCS with the same VPID may use the translations an earlier guest left, §29.4.1).
fn drop_vpid_1() {
    let o = insn::invvpid(1, &[1, 0]);
    assert!(o == Outcome::Succeed, "INVVPID single-context: {o}");
}

fn run(r: &mut Report, name: &str, vm: &mut Vm) -> Exit {
    match vm.run() {
        Ok(e) => e,
        Err(o) => {
            r.check(format_args!("{name}: entry {o}"), false);
            Exit::default()
        }
    }
}

fn expect_done(r: &mut Report, name: &str, vm: &Vm, e: &Exit) {
    if !vm.is_done(e) {
        out!(
            r,
            "{name}: exit reason={:#x} qualification={:#x} gpa={:#x}",
            e.reason,
            e.qualification,
            e.guest_physical
        );
    }
    r.check(
        format_args!("{name}: guest ran to its end (exit {:#x})", e.reason),
        vm.is_done(e),
    );
}

/// An EPT violation (exit 48) with qualification bits 8:0 `qual` at `gpa` from linear `gla`.
fn expect_violation(r: &mut Report, name: &str, e: &Exit, qual: u64, gpa: u64, gla: u64) {
    out!(
        r,
        "{name}: reason={} qualification={:#x} gpa={:#x}",
        e.reason,
        e.qualification,
        e.guest_physical
    );
    r.expect_eq(
        format_args!("{name} exit reason"),
        u64::from(e.reason),
        u64::from(reason::EPT_VIOLATION),
    );
    r.expect_eq(
        format_args!("{name} qualification"),
        e.qualification & 0x1FF,
        qual,
    );
    r.expect_eq(
        format_args!("{name} guest-physical address"),
        e.guest_physical,
        gpa,
    );
    r.expect_eq(
        format_args!("{name} guest-linear address"),
        e.guest_linear,
        gla,
    );
}

fn sweep(round: usize, page: usize) -> u64 {
    SWEEP[round * SWEEP_PAGES + page].load(Ordering::Relaxed)
}

/// Checks the three rounds of [`g_sweep`] against the values the pages had (0x100 + i, then
/// 0x200 + i, then 0x300 + i): round 0 old; round 1 old or new for each page, with at least
/// one old (`flushed` = false) or all new (`flushed`); round 2 all newest.
fn check_sweep(r: &mut Report, name: &str, flushed: bool) {
    let mut first = 0;
    let mut stale = 0;
    let mut either = 0;
    let mut last = 0;
    for i in 0..SWEEP_PAGES {
        let i64 = i as u64;
        first += u64::from(sweep(0, i) == 0x100 + i64);
        stale += u64::from(sweep(1, i) == 0x100 + i64);
        either += u64::from(sweep(1, i) == 0x100 + i64 || sweep(1, i) == 0x200 + i64);
        last += u64::from(sweep(2, i) == 0x300 + i64);
    }
    out!(
        r,
        "{name}: round 0 ok={first}, round 1 stale>0={}, round 2 ok={last}",
        u8::from(stale > 0)
    );
    let n = SWEEP_PAGES as u64;
    r.expect_eq(
        format_args!("{name}: first round reads the first mappings"),
        first,
        n,
    );
    if flushed {
        r.expect_eq(
            format_args!("{name}: second round sees every change"),
            stale,
            0,
        );
        r.expect_eq(
            format_args!("{name}: second round reads the new mappings"),
            either,
            n,
        );
    } else {
        r.expect_eq(
            format_args!("{name}: second round reads old or new mappings"),
            either,
            n,
        );
        r.check(
            format_args!("{name}: a translation survived the VM exit and entry"),
            stale > 0,
        );
    }
    r.expect_eq(
        format_args!("{name}: after the invalidation every page reads the newest mapping"),
        last,
        n,
    );
}

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut r = Report::new("vmx-ept");
    let (c, _vmxon_region, o) = vmx::enable();
    r.expect_eq(format_args!("VMXON: {o}"), o.code(), 0);
    let ev = c.ept_vpid;
    out!(
        r,
        "ept-vpid-cap: x-only={} 4-level={} wb={} 2m={} 1g={} ad={}",
        ev & 1,
        ev >> 6 & 1,
        ev >> 14 & 1,
        ev >> 16 & 1,
        ev >> 17 & 1,
        ev >> 21 & 1
    );
    let ept = Ept::new();

    // Translation: 4-KiB (GPA P → HPA Q), 2-MiB (identity), 1-GiB (GPA 1 GiB + x → HPA x).
    let q = frame_with(0x4444);
    let p = frame_with(0xBAD);
    ept.map(p, q, R | W | X | WB);
    let two_m = frame_with(0x2222);
    let one_g = frame_with(0x1111);
    let space = guest_space(&[p, two_m, GIB + one_g]);
    for (name, i, want) in [
        ("4k", 0u64, 0x4444u64),
        ("2m", 1, 0x2222),
        ("1g", 2, 0x1111),
    ] {
        let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, VA + SIZE_4K * i);
        let e = run(&mut r, name, &mut vm);
        expect_done(&mut r, name, &vm, &e);
        out!(r, "ept {name} page: read {:#x}", out_of(0));
        r.expect_eq(format_args!("ept {name} page translation"), out_of(0), want);
    }

    // Violations (Table 28-7): bits 2:0 access (read, write, fetch), bits 5:3 the entry's
    // permissions, bit 7 linear address valid, bit 8 the final translation.
    let unmapped = 3 * GIB + 0x5000;
    let space = guest_space(&[unmapped, 0, 0, 0]);
    let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, VA + 0x18);
    let e = run(&mut r, "unmapped", &mut vm);
    expect_violation(
        &mut r,
        "unmapped read",
        &e,
        0x181,
        unmapped + 0x18,
        VA + 0x18,
    );
    // A violation while walking the guest's page tables: bit 7 set, bit 8 clear (not the final
    // translation), the GPA of the PTE. Whether the walk reads or writes the PTE (to set its
    // accessed flag) is left out of the comparison (bits 1:0).
    let walked = frame_with(0x99);
    let space = guest_space(&[walked]);
    let pte = space
        .entry(VA, 1, false)
        .map_or(0, |p| p as u64 - rt::arch::KERNEL_VMA);
    let pt = pte & !0xFFF;
    ept.map(pt, pt, 0);
    let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, VA);
    let e = run(&mut r, "walk", &mut vm);
    out!(
        r,
        "page-walk violation: reason={} qualification={:#x} gpa-pte={}",
        e.reason,
        e.qualification,
        u8::from(e.guest_physical == pte)
    );
    r.expect_eq(
        format_args!("page-walk violation exit reason"),
        u64::from(e.reason),
        u64::from(reason::EPT_VIOLATION),
    );
    r.expect_eq(
        format_args!("page-walk violation qualification bits 8:2"),
        e.qualification & 0x1FC,
        0x80,
    );
    r.expect_eq(
        format_args!("page-walk violation guest-physical address = the PTE"),
        e.guest_physical,
        pte,
    );
    r.expect_eq(
        format_args!("page-walk violation guest-linear address"),
        e.guest_linear,
        VA,
    );
    // With EPT A/D flags on, accesses to guest paging structures are writes for EPT (§29.3.5):
    // a violation there sets both bit 0 and bit 1 (Table 28-7).
    let mut vm = ept_vm(&c, &ept, true, false, &space, g_read, VA);
    let e = run(&mut r, "walk a/d", &mut vm);
    out!(
        r,
        "page-walk violation with a/d: reason={} qualification={:#x}",
        e.reason,
        e.qualification
    );
    r.expect_eq(
        format_args!("page-walk violation with A/D: qualification bits 8:0"),
        e.qualification & 0x1FF,
        0x83,
    );
    ept.map(pt, pt, R | W | X | WB);
    let o = insn::invept(2, &[0, 0]);
    r.expect_eq(
        format_args!("INVEPT all-context after restoring the PT: {o}"),
        o.code(),
        0,
    );

    let ro = frame_with(0x7777);
    ept.map(ro, ro, R | WB);
    let nx = frame_with(0xC3);
    ept.map(nx, nx, R | W | WB);
    let xo = frame_with(0xC3);
    let x_only = ev & 1 != 0;
    ept.map(xo, xo, X | WB);
    let space = guest_space(&[ro, nx, xo]);
    let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, VA);
    let e = run(&mut r, "read-only read", &mut vm);
    expect_done(&mut r, "read of a read-only page", &vm, &e);
    r.expect_eq(format_args!("read of a read-only page"), out_of(0), 0x7777);
    let mut vm = ept_vm(&c, &ept, false, false, &space, g_write, VA + 8);
    let e = run(&mut r, "read-only write", &mut vm);
    expect_violation(
        &mut r,
        "write to a read-only page",
        &e,
        0x2 | 1 << 3 | 0x180,
        ro + 8,
        VA + 8,
    );
    let mut vm = ept_vm(&c, &ept, false, false, &space, g_call, VA + SIZE_4K);
    let e = run(&mut r, "fetch", &mut vm);
    expect_violation(
        &mut r,
        "fetch from a non-executable page",
        &e,
        0x4 | 3 << 3 | 0x180,
        nx,
        VA + SIZE_4K,
    );
    if x_only {
        let mut vm = ept_vm(&c, &ept, false, false, &space, g_call, VA + 2 * SIZE_4K);
        let e = run(&mut r, "execute-only call", &mut vm);
        expect_done(&mut r, "call into an execute-only page", &vm, &e);
        let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, VA + 2 * SIZE_4K);
        let e = run(&mut r, "execute-only read", &mut vm);
        expect_violation(
            &mut r,
            "read of an execute-only page",
            &e,
            0x1 | 4 << 3 | 0x180,
            xo,
            VA + 2 * SIZE_4K,
        );
    }

    // Misconfigurations (§29.3.3.1): W without R; memory type 2 (reserved).
    let wo = frame_with(0);
    ept.map(wo, wo, W | WB);
    let mt2 = frame_with(0);
    ept.map(mt2, mt2, R | W | X | 2 << 3);
    let space = guest_space(&[wo, mt2]);
    for (name, i, gpa) in [("write without read", 0u64, wo), ("memory type 2", 1, mt2)] {
        let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, VA + SIZE_4K * i);
        let e = run(&mut r, name, &mut vm);
        out!(
            r,
            "misconfiguration {name}: reason={} gpa={:#x}",
            e.reason,
            e.guest_physical
        );
        r.expect_eq(
            format_args!("misconfiguration {name} exit reason"),
            u64::from(e.reason),
            u64::from(reason::EPT_MISCONFIGURATION),
        );
        r.expect_eq(
            format_args!("misconfiguration {name} guest-physical address"),
            e.guest_physical,
            gpa,
        );
    }

    // Accessed and dirty flags (§29.3.5).
    for ad in [true, false] {
        let page = frame_with(0x4D);
        ept.map(page, page, R | W | X | WB);
        let space = guest_space(&[page]);
        let mut vm = ept_vm(&c, &ept, ad, false, &space, g_read, VA);
        let e = run(&mut r, "a/d read", &mut vm);
        expect_done(&mut r, "a/d read", &vm, &e);
        let after_read = get(ept.leaf(page)) & (ACCESSED | DIRTY);
        let mut vm = ept_vm(&c, &ept, ad, false, &space, g_write, VA);
        let e = run(&mut r, "a/d write", &mut vm);
        expect_done(&mut r, "a/d write", &vm, &e);
        let after_write = get(ept.leaf(page)) & (ACCESSED | DIRTY);
        out!(
            r,
            "ept a/d enabled={}: after read {:#x}, after write {:#x}",
            u8::from(ad),
            after_read,
            after_write
        );
        let (want_read, want_write) = if ad {
            (ACCESSED, ACCESSED | DIRTY)
        } else {
            (0, 0)
        };
        r.expect_eq(
            format_args!("EPT A/D (enabled={}) after read", u8::from(ad)),
            after_read,
            want_read,
        );
        r.expect_eq(
            format_args!("EPT A/D (enabled={}) after write", u8::from(ad)),
            after_write,
            want_write,
        );
    }

    // Cached translations (§29.4). The guest reads 8 pages (VA + 4096 * i) in three rounds
    // with a VMCALL between rounds; the host changes the translations after the first round
    // without invalidating, and after the second with the invalidation under test. The SDM
    // lets a processor drop a cached translation at any time, so after the second round every
    // page must read its old or its new value and at least one its old value (a TLB that
    // kept nothing would be a processor that flushes on VM entry or exit, which VPIDs and EPT
    // exist to avoid); after the third every page must read its newest value.
    let old: [u64; SWEEP_PAGES] = core::array::from_fn(|i| frame_with(0x100 + i as u64));
    let mid: [u64; SWEEP_PAGES] = core::array::from_fn(|i| frame_with(0x200 + i as u64));
    let new: [u64; SWEEP_PAGES] = core::array::from_fn(|i| frame_with(0x300 + i as u64));
    // EPT (with VPID 1, so entries and exits keep the combined mappings): the guest's pages
    // stay, their EPT leaves change; INVEPT single-context, then all-context.
    let gpas: [u64; SWEEP_PAGES] = core::array::from_fn(|_| frame_with(0));
    let space = guest_space(&gpas);
    for (name, kind) in [("invept single-context", 1u64), ("invept all-context", 2)] {
        for i in 0..SWEEP_PAGES {
            ept.map(gpas[i], old[i], R | W | X | WB);
        }
        let o = insn::invept(2, &[0, 0]);
        assert!(o == Outcome::Succeed, "INVEPT: {o}");
        let mut vm = ept_vm(&c, &ept, false, true, &space, g_sweep, VA);
        let mut steps = 0;
        let e = vm
            .run_until(|vm, e| {
                if e.reason != reason::VMCALL {
                    return false;
                }
                steps += 1;
                vm.skip();
                for i in 0..SWEEP_PAGES {
                    ept.map(
                        gpas[i],
                        if steps == 1 { mid[i] } else { new[i] },
                        R | W | X | WB,
                    );
                }
                if steps == 2 {
                    let o = insn::invept(kind, &[ept.eptp(false), 0]);
                    assert!(o == Outcome::Succeed, "INVEPT: {o}");
                }
                true
            })
            .unwrap_or_default();
        expect_done(&mut r, name, &vm, &e);
        check_sweep(&mut r, name, false);
    }
    // VPID without EPT (§29.1, §29.4.3.3): the guest's PTEs change between rounds.
    for (name, vpid, invvpid_type) in [
        ("vpid off", false, None),
        ("vpid individual-address", true, Some(0u64)),
        ("vpid single-context", true, Some(1)),
        ("vpid all-context", true, Some(2)),
        ("vpid single-context retaining globals", true, Some(3)),
    ] {
        let space = guest_space(&old);
        let mut vm = Vm::new(&c, g_sweep, VA);
        if vpid {
            vm.enable_secondary(proc2::ENABLE_VPID);
            write(VIRTUAL_PROCESSOR_ID, 1);
            drop_vpid_1();
        }
        write(GUEST_CR3, space.pml4);
        let mut steps = 0;
        let e = vm
            .run_until(|vm, e| {
                if e.reason != reason::VMCALL {
                    return false;
                }
                steps += 1;
                vm.skip();
                for i in 0..SWEEP_PAGES {
                    let va = VA + SIZE_4K * i as u64;
                    space.map(va, if steps == 1 { mid[i] } else { new[i] }, SIZE_4K, RW);
                    if steps == 2
                        && let Some(0) = invvpid_type
                    {
                        let o = insn::invvpid(0, &[1, va]);
                        assert!(o == Outcome::Succeed, "INVVPID: {o}");
                    }
                }
                if steps == 2
                    && let Some(t) = invvpid_type
                    && t != 0
                {
                    let o = insn::invvpid(t, &[1, 0]);
                    assert!(o == Outcome::Succeed, "INVVPID: {o}");
                }
                true
            })
            .unwrap_or_default();
        expect_done(&mut r, name, &vm, &e);
        // With VPIDs off every VM entry and exit flushes VPID 0's translations (§29.4.3.3):
        // the second round must see every change.
        check_sweep(&mut r, name, !vpid);
    }

    // An unrestricted guest in real mode under EPT: MOV AX, 1234H; VMCALL at CS base = a
    // frame, IP 0.
    if vmx::allowed1(c.proc2, proc2::UNRESTRICTED_GUEST) {
        let code = alloc_frame();
        // SAFETY: a fresh pool frame.
        unsafe {
            let b = virt(code) as *mut u8;
            for (i, byte) in [0xB8u8, 0x34, 0x12, 0x0F, 0x01, 0xC1].iter().enumerate() {
                b.add(i).write_volatile(*byte);
            }
        }
        let space = guest_space(&[]);
        let mut vm = ept_vm(&c, &ept, false, false, &space, g_read, 0);
        vm.enable_secondary(proc2::UNRESTRICTED_GUEST);
        vm.clear_bits(VM_ENTRY_CONTROLS, entry::IA32E_MODE_GUEST);
        write(
            GUEST_CR0,
            (read(GUEST_CR0) & !(vmx::CR0_PE | vmx::CR0_PG)) | vmx::CR0_NE,
        );
        write(GUEST_CR4, vmx::CR4_VMXE);
        write(GUEST_IA32_EFER, 0);
        write(GUEST_CS_SELECTOR, 0);
        write(GUEST_CS_BASE, code);
        write(GUEST_CS_LIMIT, 0xFFFF);
        write(GUEST_CS_ACCESS_RIGHTS, 0x9B);
        for (sel, base, limit, ar) in [
            (
                GUEST_SS_SELECTOR,
                GUEST_SS_BASE,
                GUEST_SS_LIMIT,
                GUEST_SS_ACCESS_RIGHTS,
            ),
            (
                GUEST_DS_SELECTOR,
                GUEST_DS_BASE,
                GUEST_DS_LIMIT,
                GUEST_DS_ACCESS_RIGHTS,
            ),
            (
                GUEST_ES_SELECTOR,
                GUEST_ES_BASE,
                GUEST_ES_LIMIT,
                GUEST_ES_ACCESS_RIGHTS,
            ),
            (
                GUEST_FS_SELECTOR,
                GUEST_FS_BASE,
                GUEST_FS_LIMIT,
                GUEST_FS_ACCESS_RIGHTS,
            ),
            (
                GUEST_GS_SELECTOR,
                GUEST_GS_BASE,
                GUEST_GS_LIMIT,
                GUEST_GS_ACCESS_RIGHTS,
            ),
        ] {
            write(sel, 0);
            write(base, 0);
            write(limit, 0xFFFF);
            write(ar, 0x93);
        }
        write(GUEST_TR_BASE, 0);
        write(GUEST_GDTR_BASE, 0);
        write(GUEST_GDTR_LIMIT, 0xFFFF);
        write(GUEST_IDTR_BASE, 0);
        write(GUEST_IDTR_LIMIT, 0x3FF);
        write(GUEST_RIP, 0);
        write(GUEST_RSP, 0xFF0);
        write(GUEST_RFLAGS, 0x2);
        let e = run(&mut r, "real mode", &mut vm);
        out!(
            r,
            "real-mode guest: reason={:#x} ax={:#x} rip={:#x}",
            e.reason,
            vm.regs.rax & 0xFFFF,
            e.guest_rip
        );
        r.expect_eq(
            format_args!("real-mode guest exit reason"),
            u64::from(e.reason),
            u64::from(reason::VMCALL),
        );
        r.expect_eq(
            format_args!("real-mode guest AX"),
            vm.regs.rax & 0xFFFF,
            0x1234,
        );
        r.expect_eq(
            format_args!("real-mode guest RIP at VMCALL"),
            e.guest_rip,
            3,
        );
        r.expect_eq(
            format_args!("real-mode guest CR0.PE"),
            read(GUEST_CR0) & vmx::CR0_PE,
            0,
        );
    }
    r.finish()
}
