//! The instructions cpu-paging needs that neither Rust nor the runtime wraps: INVPCID, STAC
//! and CLAC. The only file of this program with inline assembly.

use core::arch::asm;

/// INVPCID type 0, individual-address invalidation (SDM Vol. 2A "INVPCID"): drops the
/// translations of `va` tagged with `pcid`, global ones excepted.
pub fn invpcid_address(pcid: u64, va: u64) {
    let descriptor: [u64; 2] = [pcid, va];
    // SAFETY: dropping cached translations never breaks memory safety; the descriptor is a live
    // local.
    unsafe {
        asm!("invpcid {t}, [{d}]", t = in(reg) 0u64, d = in(reg) &raw const descriptor,
             options(nostack, preserves_flags))
    };
}

/// STAC: sets RFLAGS.AC, allowing supervisor accesses to user pages under SMAP (SDM Vol. 2B
/// "STAC").
pub fn stac() {
    // SAFETY: changes only RFLAGS.AC.
    unsafe { asm!("stac", options(nomem, nostack)) };
}

/// CLAC: clears RFLAGS.AC.
pub fn clac() {
    // SAFETY: changes only RFLAGS.AC.
    unsafe { asm!("clac", options(nomem, nostack)) };
}
