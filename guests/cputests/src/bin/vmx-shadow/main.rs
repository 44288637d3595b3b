//! vmx-shadow: VMCS shadowing (SDM Vol. 3C §25.10 ordinary and shadow VMCSs, §25.6.15 the
//! VMREAD and VMWRITE bitmaps, §26.1.3 VMREAD/VMWRITE exits in non-root operation, §31.3
//! VMREAD and VMWRITE in non-root operation, §27.3.1.5 the VMCS link pointer).
//!
//! - A shadow VMCS (revision identifier with bit 31 set) loads with VMPTRLD and takes
//!   VMREAD/VMWRITE in root operation, but cannot be entered: VMLAUNCH with it current is
//!   VMfailInvalid (§25.10).
//! - A guest whose VMCS has "VMCS shadowing" and links the shadow VMCS: VMREAD/VMWRITE of a
//!   field whose bitmap bit is clear access the shadow VMCS (the value the host put there is
//!   read, a written value reads back, and after the exit the host finds it in the shadow VMCS
//!   after VMCLEAR and VMPTRLD of it); a field whose bit is set exits (23, 25), as does an
//!   encoding with bits 63:15 set; an unsupported field with a clear bit is VMfailValid in the
//!   guest.
//! - With the link pointer FFFFFFFF_FFFFFFFFH, a guest VMREAD is VMfailInvalid.

#![no_std]
#![no_main]

mod asm;

use asm::*;
use core::sync::atomic::Ordering;
use cputests::out;
use cputests::paging::{alloc_frame, virt};
use cputests::report::Report;
use cputests::vmx::fields::*;
use cputests::vmx::insn::{self, Outcome};
use cputests::vmx::{self, Vm, proc2, read, reason, vmclear, vmptrld, vmread, vmwrite, write};
use rt::BootInfo;

const CF: u64 = 1 << 0;
const ZF: u64 = 1 << 6;

/// Sets the bit of `encoding` (bits 14:0) in the bitmap frame `pa`.
fn set_bit(pa: u64, encoding: u32) {
    let bit = encoding & 0x7FFF;
    // SAFETY: a pool frame of 4096 bytes; bit / 8 < 4096.
    unsafe {
        let p = (virt(pa) as *mut u8).add((bit / 8) as usize);
        p.write_volatile(p.read_volatile() | 1 << (bit % 8));
    }
}

fn out_of(i: usize) -> u64 {
    OUT[i].load(Ordering::Relaxed)
}

fn expect(r: &mut Report, name: &str, got: Outcome, want: Outcome) {
    out!(r, "{name}: {got}");
    r.expect_eq(
        format_args!("{name}: {got}, want {want}"),
        got.code(),
        want.code(),
    );
}

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut r = Report::new("vmx-shadow");
    let (c, _vmxon_region, o) = vmx::enable();
    r.expect_eq(format_args!("VMXON: {o}"), o.code(), 0);
    r.check(
        format_args!("VMCS shadowing allowed"),
        vmx::allowed1(c.proc2, proc2::VMCS_SHADOWING),
    );
    let max_index = (c.vmcs_enum >> 1) & 0x1FF;
    r.check(
        format_args!("encoding {UNSUPPORTED:#x} above VMCS_ENUM"),
        u64::from(index(UNSUPPORTED)) > max_index,
    );

    // The shadow VMCS in root operation.
    let shadow = vmx::region(c.revision(), true);
    expect(&mut r, "vmclear shadow", vmclear(shadow), Outcome::Succeed);
    expect(&mut r, "vmptrld shadow", vmptrld(shadow), Outcome::Succeed);
    expect(
        &mut r,
        "vmwrite shadow guest rip",
        vmwrite(GUEST_RIP, 0xAAAA),
        Outcome::Succeed,
    );
    expect(
        &mut r,
        "vmwrite shadow guest cs",
        vmwrite(GUEST_CS_SELECTOR, 0x33),
        Outcome::Succeed,
    );
    r.expect_eq(
        format_args!("vmread shadow guest rip"),
        vmread(GUEST_RIP).unwrap_or(0),
        0xAAAA,
    );
    let mut regs = insn::GuestRegs::default();
    // SAFETY: the current VMCS is a shadow VMCS: VMLAUNCH fails before any entry (§25.10).
    let o = unsafe { insn::enter(&mut regs, false) }
        .err()
        .unwrap_or(Outcome::Succeed);
    expect(
        &mut r,
        "vmlaunch with a shadow vmcs current",
        o,
        Outcome::FailInvalid,
    );
    expect(
        &mut r,
        "vmclear shadow again",
        vmclear(shadow),
        Outcome::Succeed,
    );

    // The guest with shadowing.
    for o in &OUT {
        o.store(0, Ordering::Relaxed);
    }
    let mut vm = Vm::new(&c, g_shadow, 0);
    let (read_bitmap, write_bitmap) = (alloc_frame(), alloc_frame());
    set_bit(read_bitmap, GUEST_RSP);
    set_bit(write_bitmap, GUEST_RSP);
    vm.enable_secondary(proc2::VMCS_SHADOWING);
    write(VMREAD_BITMAP, read_bitmap);
    write(VMWRITE_BITMAP, write_bitmap);
    write(VMCS_LINK_POINTER, shadow);
    let wants = [reason::VMREAD, reason::VMWRITE, reason::VMREAD];
    let mut i = 0;
    let e = vm
        .run_until(|vm, e| {
            let ok = i < wants.len() && e.reason == wants[i];
            out!(r, "shadow guest exit #{i}: reason={}", e.reason);
            r.expect_eq(
                format_args!("shadow guest exit #{i}"),
                u64::from(e.reason),
                u64::from(*wants.get(i).unwrap_or(&0)),
            );
            if i == 0 {
                // The emulated VMREAD of GUEST_RSP: its destination is RBX.
                vm.regs.rbx = 0xE1;
            }
            i += 1;
            vm.skip();
            ok
        })
        .unwrap_or_default();
    r.check(
        format_args!("shadow guest reached its end (exit {:#x})", e.reason),
        vm.is_done(&e),
    );
    r.expect_eq(format_args!("shadow guest: exits"), i as u64, 3);
    let got = [out_of(0), out_of(1), out_of(2), out_of(3)];
    out!(
        r,
        "shadow guest: rip={:#x} cs={:#x} rsp={:#x} flags={:#x}",
        got[0],
        got[1],
        got[2],
        got[3]
    );
    r.expect_eq(
        format_args!("guest VMREAD from the shadow VMCS"),
        got[0],
        0xAAAA,
    );
    r.expect_eq(
        format_args!("guest VMWRITE then VMREAD via the shadow VMCS"),
        got[1],
        0x44,
    );
    r.expect_eq(
        format_args!("guest VMREAD emulated by the host"),
        got[2],
        0xE1,
    );
    // IA32_VMX_MISC[29] = 0: VMWRITE to a read-only field fails (§31.3 VMWRITE).
    if c.misc >> 29 & 1 == 0 {
        r.expect_eq(
            format_args!("guest VMWRITE of a read-only field: VMfailValid"),
            out_of(4) & (CF | ZF),
            ZF,
        );
    }
    r.expect_eq(
        format_args!("guest VMREAD unsupported field: VMfailValid"),
        got[3] & (CF | ZF),
        ZF,
    );
    // The guest's write is in the shadow VMCS; the ordinary VMCS's own field is the guest's
    // real CS selector.
    r.expect_eq(
        format_args!("ordinary VMCS guest CS unchanged"),
        read(GUEST_CS_SELECTOR),
        u64::from(vm.host.selectors[0]),
    );
    expect(
        &mut r,
        "vmclear shadow after the guest",
        vmclear(shadow),
        Outcome::Succeed,
    );
    expect(
        &mut r,
        "vmptrld shadow after the guest",
        vmptrld(shadow),
        Outcome::Succeed,
    );
    r.expect_eq(
        format_args!("host VMREAD of the guest's write in the shadow VMCS"),
        vmread(GUEST_CS_SELECTOR).unwrap_or(0),
        0x44,
    );

    // Shadowing with the link pointer FFFFFFFF_FFFFFFFFH: VMfailInvalid in the guest.
    for o in &OUT {
        o.store(0, Ordering::Relaxed);
    }
    let mut vm = Vm::new(&c, g_vmread_flags, 0);
    vm.enable_secondary(proc2::VMCS_SHADOWING);
    write(VMREAD_BITMAP, alloc_frame());
    write(VMWRITE_BITMAP, alloc_frame());
    let e = vm.run().unwrap_or_default();
    r.check(
        format_args!("no-link guest reached its end (exit {:#x})", e.reason),
        vm.is_done(&e),
    );
    out!(r, "guest vmread without a link: flags={:#x}", out_of(0));
    r.expect_eq(
        format_args!("guest VMREAD without a shadow VMCS: VMfailInvalid"),
        out_of(0) & (CF | ZF),
        CF,
    );
    r.finish()
}
