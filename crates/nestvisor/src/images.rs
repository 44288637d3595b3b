//! The guest images, built from `guests/` by `build.rs` (target x86_64-unknown-none, release)
//! and embedded in the program, so a fresh checkout runs with no extra files.
//!
//! Each image is a multiboot1 kernel (multiboot spec 0.6.96 §3.1, with the a.out-kludge
//! addresses): `qemu-system-x86_64 -kernel` and the board's own loader boot the same bytes.

/// guest-os: the multitasking kernel with the workloads (`docs/guest-os.md`).
pub static GUEST_OS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-os.elf"));
/// guest-hv: the hypervisor of `crates/hv` on real VMX instructions (`docs/guest-hv.md`).
pub static GUEST_HV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-hv.elf"));

// The CPU test programs and benchmark kernels (`docs/testing.md`): the same output under QEMU
// and `nestvisor run --bare`.
/// cpu-alu: integer instructions against the SDM's result and flag definitions.
pub static CPU_ALU: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-alu.elf"));
/// cpu-exceptions: exception delivery, error codes, CR2, RSP0 and IST stacks, #DF.
pub static CPU_EXCEPTIONS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-exceptions.elf"));
/// cpu-paging: page sizes, A/D flags, CR0.WP, TLB invalidation, global pages, PCID.
pub static CPU_PAGING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-paging.elf"));
/// cpu-paging-legacy: 32-bit and PAE paging in 32-bit protected mode (page sizes, A/D flags,
/// #PF error codes, INVLPG, CR3 loads, PDPTE registers).
pub static CPU_PAGING_LEGACY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cpu-paging-legacy.elf"));
/// cpu-modes: ring 3, INT n gates, SYSCALL/SYSRET, far returns, SWAPGS, the TSC.
pub static CPU_MODES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-modes.elf"));
/// bench-intloop: a tight integer loop (`iters=N`).
pub static BENCH_INTLOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench-intloop.elf"));
/// bench-mmu: page-table rewrites, CR3 loads and page touches (`rounds=N`).
pub static BENCH_MMU: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench-mmu.elf"));

// The VMX test programs (`docs/testing.md`, "The VMX programs"): nestvisor only (QEMU TCG has
// no VMX), each checking its results against the SDM.
/// vmx-insns: the VMX instructions of root operation and their VM-instruction error numbers.
pub static VMX_INSNS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmx-insns.elf"));
/// vmx-entry: VM-entry checks (controls, host state, guest state, MSR loading) and failures.
pub static VMX_ENTRY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmx-entry.elf"));
/// vmx-exits: VM exits of non-root operation, event injection, exit information.
pub static VMX_EXITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmx-exits.elf"));
/// vmx-ept: EPT translation, violations, misconfigurations, A/D flags, INVEPT, VPID.
pub static VMX_EPT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmx-ept.elf"));
/// vmx-shadow: VMCS shadowing with VMREAD/VMWRITE bitmaps.
pub static VMX_SHADOW: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmx-shadow.elf"));

/// Names of the embedded images, for `nestvisor image NAME`.
pub const NAMES: &[&str] = &[
    "guest-os",
    "guest-hv",
    "cpu-alu",
    "cpu-exceptions",
    "cpu-paging",
    "cpu-paging-legacy",
    "cpu-modes",
    "bench-intloop",
    "bench-mmu",
    "vmx-insns",
    "vmx-entry",
    "vmx-exits",
    "vmx-ept",
    "vmx-shadow",
];

/// The embedded image called `name`.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    match name {
        "guest-os" => Some(GUEST_OS),
        "guest-hv" => Some(GUEST_HV),
        "cpu-alu" => Some(CPU_ALU),
        "cpu-exceptions" => Some(CPU_EXCEPTIONS),
        "cpu-paging" => Some(CPU_PAGING),
        "cpu-paging-legacy" => Some(CPU_PAGING_LEGACY),
        "cpu-modes" => Some(CPU_MODES),
        "bench-intloop" => Some(BENCH_INTLOOP),
        "bench-mmu" => Some(BENCH_MMU),
        "vmx-insns" => Some(VMX_INSNS),
        "vmx-entry" => Some(VMX_ENTRY),
        "vmx-exits" => Some(VMX_EXITS),
        "vmx-ept" => Some(VMX_EPT),
        "vmx-shadow" => Some(VMX_SHADOW),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_an_image() {
        for name in NAMES {
            let image = by_name(name).unwrap();
            assert_eq!(&image[..4], b"\x7fELF", "{name} is not an ELF file");
        }
        assert!(by_name("no-such-image").is_none());
    }
}
