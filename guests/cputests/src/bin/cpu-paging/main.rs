//! cpu-paging: 4-level paging and the TLB (SDM Vol. 3A §5.5 "4-Level Paging", §5.6 "Access
//! Rights", §5.8 "Accessed and Dirty Flags", §5.10 "Caching Translation Information": §5.10.2.4
//! global pages, §5.10.4.1 INVLPG and MOV to CR3, §5.10.4.4 delayed invalidation, §5.10.1
//! PCIDs).
//!
//! - 4-KiB, 2-MiB and (when CPUID.80000001H:EDX[26] says so) 1-GiB pages translate to the
//!   frames they name, and the processor sets the accessed flag in every entry of the walk and
//!   the dirty flag in the leaf on a write (never in a non-leaf entry).
//! - CR0.WP: a ring-0 write to a read-only page faults with WP = 1 and succeeds with WP = 0.
//! - SMEP and SMAP (§5.6.1), when CPUID.07H:EBX reports them: a ring-0 call into a user page
//!   faults with CR4.SMEP; a ring-0 read of a user page faults with CR4.SMAP unless RFLAGS.AC.
//! - TLB: after a translation is cached, rewriting its PTE without INVLPG leaves the old
//!   translation in use (reading the old frame), and INVLPG makes the new one visible; with
//!   CR4.PGE a CR3 load drops a non-global translation and toggling CR4.PGE drops a global one.
//!   The SDM allows a processor to drop any entry at any time, so keeping a global translation
//!   across a CR3 load is checked only with `strict=1` (hardware and nestvisor keep it; QEMU
//!   TCG flushes its whole TLB on every CR3 load). The stale read without INVLPG holds on all
//!   three.
//! - PCID (only with `pcid=1` on the command line, which needs CPUID.01H:ECX.PCID[17]; QEMU 7.2
//!   TCG has no PCID): CR3 loads with bit 63 keep a PCID's translations, loads without flush
//!   them, INVPCID type 0 drops one address.

#![no_std]
#![no_main]

mod asm;

use cputests::out;
use cputests::paging::{
    self, A, ADDR_MASK, AddressSpace, D, G, PS, RW, SIZE_1G, SIZE_2M, SIZE_4K, US, virt,
};
use cputests::report::Report;
use cputests::trap;
use rt::BootInfo;
use rt::arch::{invlpg, read_cr0, read_cr3, read_cr4, write_cr0, write_cr3, write_cr4};

/// The test region: PML4 slot 2.
const BASE: u64 = 0x0000_0100_0000_0000;
const PAGE_4K: u64 = BASE + 0x1000;
const READ_ONLY: u64 = BASE + 0x3000;
const GLOBAL: u64 = BASE + 0x5000;
const NOT_GLOBAL: u64 = BASE + 0x6000;
const STALE: u64 = BASE + 0x7000;
const PCID_PAGE: u64 = BASE + 0x8000;
const USER_DATA: u64 = BASE + 0x9000;
const USER_CODE: u64 = BASE + 0xA000;
const PAGE_2M: u64 = BASE + 0x20_0000;
const PAGE_1G: u64 = BASE + 0x4000_0000;

/// CR0.WP: supervisor writes honour read-only pages.
const CR0_WP: u64 = 1 << 16;
/// CR4.PGE: global pages.
const CR4_PGE: u64 = 1 << 7;
/// CR4.SMEP: no supervisor instruction fetches from user pages.
const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: no supervisor data accesses to user pages unless RFLAGS.AC = 1.
const CR4_SMAP: u64 = 1 << 21;
/// CR4.PCIDE: process-context identifiers.
const CR4_PCIDE: u64 = 1 << 17;
/// CR3 bit 63 with CR4.PCIDE = 1: keep the PCID's translations.
const CR3_NO_FLUSH: u64 = 1 << 63;

/// What the 1-GiB page test reads (slot 0) and writes (slot 1) through the 1-GiB page: two
/// quadwords of the image's writable data.
static mut ONE_GIB_TARGET: [u64; 2] = [MARKER, 0];
const MARKER: u64 = 0x1B1B_1B1B_0000_0001;

fn read(va: u64) -> u64 {
    // SAFETY: callers pass addresses mapped to pool frames or to the image.
    unsafe { (va as *const u64).read_volatile() }
}

fn write(va: u64, value: u64) {
    // SAFETY: callers pass addresses mapped writable to pool frames.
    unsafe { (va as *mut u64).write_volatile(value) }
}

/// A fresh frame holding `value` in its first quadword.
fn frame_with(value: u64) -> u64 {
    let pa = paging::alloc_frame();
    // SAFETY: a fresh pool frame, mapped at KERNEL_VMA.
    unsafe { virt(pa).write_volatile(value) };
    pa
}

/// Reloads CR3 with its own value: drops non-global translations (§5.10.4.1).
fn reload_cr3() {
    // SAFETY: the same hierarchy again.
    unsafe { write_cr3(read_cr3()) };
}

fn flag(entry: u64, bit: u64) -> u8 {
    u8::from(entry & bit != 0)
}

/// The A flags of the PML4E, PDPTE and PDE (when they are not the leaf) above `va`.
fn upper_accessed(space: &AddressSpace, va: u64, leaf_level: u32) -> [u8; 3] {
    let mut a = [0; 3];
    // Highest level first.
    for (slot, level) in a.iter_mut().zip((leaf_level + 1..=4).rev()) {
        *slot = flag(space.read(va, level).unwrap_or(0), A);
    }
    a
}

/// Clears A and D in every entry of the walk of `va` and drops cached translations and
/// paging-structure caches for it.
fn clear_accessed(space: &AddressSpace, va: u64, leaf_level: u32) {
    for level in leaf_level..=4 {
        let e = space.read(va, level).expect("mapped");
        space.write(va, level, e & !(A | D));
    }
    invlpg(va);
    reload_cr3();
}

/// One page size: the translation is right, and A then D are set where the SDM says.
fn page_size(
    report: &mut Report,
    space: &AddressSpace,
    name: &str,
    va: u64,
    pa: u64,
    level: u32,
    expected: u64,
) {
    let size = [0, SIZE_4K, SIZE_2M, SIZE_1G][level as usize];
    space.map(va, pa, size, RW);
    clear_accessed(space, va, level);
    let offset = expected_offset(level);
    let value = read(va + offset);
    let after_read = space.read(va, level).unwrap_or(0);
    let upper = upper_accessed(space, va, level);
    let upper = &upper[..(4 - level) as usize];
    write(va + offset + 8, value);
    let after_write = space.read(va, level).unwrap_or(0);
    let upper_dirty: u8 = (level + 1..=4)
        .map(|l| flag(space.read(va, l).unwrap_or(0), D))
        .sum();
    out!(
        report,
        "{name}: read={value:#x} leaf-ps={} after-read a={} d={} upper-a={upper:?} after-write a={} d={} upper-d={upper_dirty}",
        flag(after_read, PS),
        flag(after_read, A),
        flag(after_read, D),
        flag(after_write, A),
        flag(after_write, D),
    );
    report.expect_eq(format_args!("{name} translation"), value, expected);
    report.expect_eq(format_args!("{name} A after read"), after_read & (A | D), A);
    report.check(
        format_args!("{name} upper A"),
        upper.iter().all(|&a| a == 1),
    );
    report.expect_eq(
        format_args!("{name} A, D after write"),
        after_write & (A | D),
        A | D,
    );
    report.expect_eq(
        format_args!("{name} no D in non-leaf entries"),
        u64::from(upper_dirty),
        0,
    );
}

/// Where in the page the page-size test reads: for the 1-GiB page (physical 0 upwards) the
/// marker in the image; elsewhere the frame's first quadword.
fn expected_offset(level: u32) -> u64 {
    if level == 3 {
        paging::phys(&raw const ONE_GIB_TARGET as u64)
    } else {
        0
    }
}

fn page_sizes(report: &mut Report, space: &AddressSpace) {
    page_size(
        report,
        space,
        "4k",
        PAGE_4K,
        frame_with(0x4444_0000_0000_0004),
        1,
        0x4444_0000_0000_0004,
    );
    let Some(big) = paging::alloc_2m() else {
        report.check(
            format_args!("2m: no aligned 2-MiB block in the pool"),
            false,
        );
        return;
    };
    // SAFETY: the 2-MiB block is pool memory, mapped at KERNEL_VMA.
    unsafe { virt(big).write_volatile(0x2222_0000_0000_0002) };
    page_size(report, space, "2m", PAGE_2M, big, 2, 0x2222_0000_0000_0002);
    let gib = rt::arch::cpuid(0x8000_0001, 0).edx & (1 << 26) != 0;
    if gib {
        // The first GiB of physical memory, which holds the image.
        page_size(report, space, "1g", PAGE_1G, 0, 3, MARKER);
    } else {
        out!(report, "1g: CPUID.80000001H:EDX[26] clear, no 1-GiB pages");
    }
}

extern "C" fn write_probe(va: u64) {
    write(va, 0x5757);
}

extern "C" fn read_probe(va: u64) {
    core::hint::black_box(read(va));
}

extern "C" fn call_probe(va: u64) {
    // SAFETY: `va` holds a RET (or the fetch faults and the probe catches it).
    let f: extern "C" fn() = unsafe { core::mem::transmute(va as usize) };
    f();
}

/// A probe's outcome as printed: `ok`, or the vector and error code.
fn outcome(t: Option<trap::Trap>) -> u64 {
    t.map_or(0, |t| (t.vector << 8) | t.error)
}

/// SMEP and SMAP (SDM Vol. 3A §5.6.1): with CR4.SMEP a supervisor fetch from a user page faults
/// (error code P | I/D); with CR4.SMAP a supervisor read of a user page faults (P) unless
/// RFLAGS.AC = 1.
fn smep_smap(report: &mut Report, space: &AddressSpace) {
    let ebx = rt::arch::cpuid(7, 0).ebx;
    let (smep, smap) = (ebx & (1 << 7) != 0, ebx & (1 << 20) != 0);
    out!(
        report,
        "smep/smap: cpuid smep={} smap={}",
        u8::from(smep),
        u8::from(smap)
    );
    space.map(USER_DATA, frame_with(0x5A5A), SIZE_4K, RW | US);
    space.map(USER_CODE, frame_with(0xC3), SIZE_4K, US);
    let cr4 = read_cr4();
    if smep {
        // SAFETY: the page holds a RET.
        let off = unsafe { trap::probe(call_probe, USER_CODE) };
        // SAFETY: SMEP only restricts fetches; the program never runs user pages at ring 0
        // except in the probe below.
        unsafe { write_cr4(cr4 | CR4_SMEP) };
        // SAFETY: the fetch faults and the probe catches it.
        let on = unsafe { trap::probe(call_probe, USER_CODE) };
        // SAFETY: restores CR4.
        unsafe { write_cr4(cr4) };
        out!(
            report,
            "smep: cr4.smep=0 call={:#x} cr4.smep=1 call={:#x}",
            outcome(off),
            outcome(on)
        );
        report.expect_eq(
            format_args!("smep off: supervisor call into a user page"),
            outcome(off),
            0,
        );
        report.expect_eq(
            format_args!("smep on: supervisor call into a user page"),
            outcome(on),
            (14 << 8) | 0x11,
        );
    }
    if smap {
        // SAFETY: SMAP only restricts supervisor accesses to user pages, which the program
        // makes only in the probes below.
        unsafe { write_cr4(cr4 | CR4_SMAP) };
        asm::clac();
        // SAFETY: the read faults and the probe catches it.
        let denied = unsafe { trap::probe(read_probe, USER_DATA) };
        asm::stac();
        // SAFETY: a read of a mapped page.
        let allowed = unsafe { trap::probe(read_probe, USER_DATA) };
        let value = read(USER_DATA);
        asm::clac();
        // SAFETY: restores CR4.
        unsafe { write_cr4(cr4) };
        out!(
            report,
            "smap: ac=0 read={:#x} ac=1 read={:#x} value={value:#x}",
            outcome(denied),
            outcome(allowed)
        );
        report.expect_eq(
            format_args!("smap, AC=0: supervisor read of a user page"),
            outcome(denied),
            (14 << 8) | 0x1,
        );
        report.expect_eq(
            format_args!("smap, AC=1: supervisor read of a user page"),
            outcome(allowed),
            0,
        );
        report.expect_eq(format_args!("smap, AC=1: value"), value, 0x5A5A);
    }
}

fn write_protect(report: &mut Report, space: &AddressSpace) {
    space.map(READ_ONLY, frame_with(0x0101), SIZE_4K, 0);
    let cr0 = read_cr0();
    // SAFETY: toggles CR0.WP only; the program never relies on writing read-only pages.
    unsafe { write_cr0(cr0 | CR0_WP) };
    // SAFETY: the write faults or hits the read-only test frame.
    let with_wp = unsafe { trap::probe(write_probe, READ_ONLY) };
    let after_wp = read(READ_ONLY);
    // SAFETY: as above.
    unsafe { write_cr0(cr0 & !CR0_WP) };
    // SAFETY: as above.
    let without_wp = unsafe { trap::probe(write_probe, READ_ONLY) };
    let after_no_wp = read(READ_ONLY);
    // SAFETY: restores CR0.
    unsafe { write_cr0(cr0) };
    let describe = |t: Option<trap::Trap>| t.map_or(0, |t| (t.vector << 8) | t.error);
    out!(
        report,
        "cr0.wp=1: write faults={} error={:#x} value={after_wp:#x}; cr0.wp=0: write faults={} value={after_no_wp:#x}",
        u8::from(with_wp.is_some()),
        with_wp.map_or(0, |t| t.error),
        u8::from(without_wp.is_some()),
    );
    report.expect_eq(
        format_args!("cr0.wp=1 write"),
        describe(with_wp),
        (14 << 8) | 3,
    );
    report.expect_eq(format_args!("cr0.wp=1 value kept"), after_wp, 0x0101);
    report.check(
        format_args!("cr0.wp=0 write does not fault"),
        without_wp.is_none(),
    );
    report.expect_eq(format_args!("cr0.wp=0 value written"), after_no_wp, 0x5757);
}

/// Points the 4-KiB PTE of `va` at `pa`, keeping its flags, without any invalidation.
fn remap(space: &AddressSpace, va: u64, pa: u64) {
    let e = space.read(va, 1).expect("mapped");
    space.write(va, 1, (e & !ADDR_MASK) | pa);
}

fn stale_translations(report: &mut Report, space: &AddressSpace) {
    space.map(STALE, frame_with(0xA0A0), SIZE_4K, RW);
    invlpg(STALE);
    let first = read(STALE);
    remap(space, STALE, frame_with(0xB0B0));
    let no_flush = read(STALE);
    invlpg(STALE);
    let after_invlpg = read(STALE);
    out!(
        report,
        "tlb: first={first:#x} remapped-no-flush={no_flush:#x} after-invlpg={after_invlpg:#x}"
    );
    report.expect_eq(format_args!("tlb first read"), first, 0xA0A0);
    report.expect_eq(
        format_args!("tlb stale translation without a flush"),
        no_flush,
        0xA0A0,
    );
    report.expect_eq(
        format_args!("tlb fresh translation after INVLPG"),
        after_invlpg,
        0xB0B0,
    );
}

fn global_pages(report: &mut Report, space: &AddressSpace, strict: bool) {
    if rt::arch::cpuid(1, 0).edx & (1 << 13) == 0 {
        out!(
            report,
            "global: CPUID.01H:EDX.PGE[13] clear, no global pages"
        );
        return;
    }
    let cr4 = read_cr4();
    // SAFETY: enables global pages; every mapping stays valid.
    unsafe { write_cr4(cr4 | CR4_PGE) };
    space.map(GLOBAL, frame_with(0x6001), SIZE_4K, RW | G);
    space.map(NOT_GLOBAL, frame_with(0x6002), SIZE_4K, RW);
    invlpg(GLOBAL);
    invlpg(NOT_GLOBAL);
    let cached = (read(GLOBAL), read(NOT_GLOBAL));
    remap(space, GLOBAL, frame_with(0x7001));
    remap(space, NOT_GLOBAL, frame_with(0x7002));
    reload_cr3();
    let after_cr3 = (read(GLOBAL), read(NOT_GLOBAL));
    // Toggling CR4.PGE invalidates every translation, global ones included (§5.10.4.1).
    // SAFETY: changes only TLB features; every mapping stays valid.
    unsafe { write_cr4(cr4 & !CR4_PGE) };
    // SAFETY: as above.
    unsafe { write_cr4(cr4 | CR4_PGE) };
    let after_pge = read(GLOBAL);
    // SAFETY: restores CR4.
    unsafe { write_cr4(cr4) };
    out!(
        report,
        "global: cached={:#x},{:#x} after-cr3-load non-global={:#x} after-pge-toggle global={after_pge:#x}",
        cached.0,
        cached.1,
        after_cr3.1,
    );
    report.expect_eq(format_args!("global first read"), cached.0, 0x6001);
    report.expect_eq(
        format_args!("non-global translation dropped by a CR3 load"),
        after_cr3.1,
        0x7002,
    );
    report.expect_eq(
        format_args!("CR4.PGE toggle drops global translations"),
        after_pge,
        0x7001,
    );
    // A CR3 load need not drop a global translation, but a TLB may drop any entry at any time
    // (§5.10.4.1, §5.10.1): QEMU TCG flushes everything on a CR3 load. `strict=1` requires what
    // hardware and nestvisor do: the global translation survives.
    if strict {
        out!(
            report,
            "global (strict): after-cr3-load global={:#x}",
            after_cr3.0
        );
        report.expect_eq(
            format_args!("global translation survives a CR3 load"),
            after_cr3.0,
            0x6001,
        );
    }
}

fn pcid(report: &mut Report, space: &AddressSpace) {
    if rt::arch::cpuid(1, 0).ecx & (1 << 17) == 0 {
        report.check(
            format_args!("pcid=1 given but CPUID.01H:ECX.PCID[17] is clear"),
            false,
        );
        return;
    }
    let other = AddressSpace::new();
    space.map(PCID_PAGE, frame_with(0xC001), SIZE_4K, RW);
    other.map(PCID_PAGE, frame_with(0xC002), SIZE_4K, RW);
    let cr4 = read_cr4();
    // SAFETY: CR3[11:0] is 0, as enabling PCIDs requires; every hierarchy maps the image.
    unsafe { write_cr4(cr4 | CR4_PCIDE) };
    // SAFETY: both hierarchies share the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(1, false) };
    let first = read(PCID_PAGE);
    // SAFETY: both hierarchies share the runtime's mappings of the image, stacks and tables.
    unsafe { other.load(2, false) };
    let second = read(PCID_PAGE);
    remap(space, PCID_PAGE, frame_with(0xC003));
    // SAFETY: both hierarchies share the runtime's mappings of the image, stacks and tables.
    unsafe { write_cr3(space.pml4 | 1 | CR3_NO_FLUSH) };
    let kept = read(PCID_PAGE);
    // SAFETY: both hierarchies share the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(1, false) };
    let flushed = read(PCID_PAGE);
    remap(space, PCID_PAGE, frame_with(0xC004));
    let invpcid = rt::arch::cpuid(7, 0).ebx & (1 << 10) != 0;
    let after_invpcid = if invpcid {
        asm::invpcid_address(1, PCID_PAGE);
        read(PCID_PAGE)
    } else {
        0
    };
    // SAFETY: changes only TLB features (PGE, PCIDE); every mapping stays valid.
    unsafe { write_cr4(cr4) };
    // SAFETY: both hierarchies share the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(0, false) };
    out!(
        report,
        "pcid: pcid1={first:#x} pcid2={second:#x} cr3-no-flush={kept:#x} cr3-flush={flushed:#x} invpcid={after_invpcid:#x}"
    );
    report.expect_eq(format_args!("pcid 1"), first, 0xC001);
    report.expect_eq(format_args!("pcid 2"), second, 0xC002);
    report.expect_eq(
        format_args!("pcid CR3 load with bit 63 keeps translations"),
        kept,
        0xC001,
    );
    report.expect_eq(
        format_args!("pcid CR3 load without bit 63 flushes"),
        flushed,
        0xC003,
    );
    if invpcid {
        report.expect_eq(format_args!("INVPCID type 0"), after_invpcid, 0xC004);
    }
}

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut report = Report::new("cpu-paging");
    let cmdline = boot.cmdline();
    let (Some(want_pcid), Some(strict)) = (
        cputests::args::number(cmdline, "pcid", 0),
        cputests::args::number(cmdline, "strict", 0),
    ) else {
        out!(report, "usage: [pcid=0|1] [strict=0|1]");
        rt::exit(cputests::report::EXIT_USAGE);
    };
    let space = AddressSpace::new();
    // SAFETY: the new hierarchy shares the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(0, false) };
    page_sizes(&mut report, &space);
    write_protect(&mut report, &space);
    smep_smap(&mut report, &space);
    stale_translations(&mut report, &space);
    global_pages(&mut report, &space, strict == 1);
    if want_pcid == 1 {
        pcid(&mut report, &space);
    }
    report.finish()
}
