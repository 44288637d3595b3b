//! The guest images, built from `guests/` by `build.rs` (target x86_64-unknown-none, release)
//! and embedded in the program, so a fresh checkout runs with no extra files.
//!
//! Each image is a multiboot1 kernel (multiboot spec 0.6.96 §3.1, with the a.out-kludge
//! addresses): `qemu-system-x86_64 -kernel` and the board's own loader boot the same bytes.

/// guest-os: the multitasking kernel with the workloads (`docs/guest-os.md`).
pub static GUEST_OS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-os.elf"));

// The CPU test programs and benchmark kernels (`docs/testing.md`): the same output under QEMU
// and `nestvisor run --bare`.
/// cpu-alu: integer instructions against the SDM's result and flag definitions.
pub static CPU_ALU: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-alu.elf"));
/// cpu-exceptions: exception delivery, error codes, CR2, RSP0 and IST stacks, #DF.
pub static CPU_EXCEPTIONS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-exceptions.elf"));
/// cpu-paging: page sizes, A/D flags, CR0.WP, TLB invalidation, global pages, PCID.
pub static CPU_PAGING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-paging.elf"));
/// cpu-modes: ring 3, INT n gates, SYSCALL/SYSRET, far returns, SWAPGS, the TSC.
pub static CPU_MODES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpu-modes.elf"));
/// bench-intloop: a tight integer loop (`iters=N`).
pub static BENCH_INTLOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench-intloop.elf"));
/// bench-mmu: page-table rewrites, CR3 loads and page touches (`rounds=N`).
pub static BENCH_MMU: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench-mmu.elf"));

/// Names of the embedded images, for `nestvisor image NAME`.
pub const NAMES: &[&str] = &[
    "guest-os",
    "cpu-alu",
    "cpu-exceptions",
    "cpu-paging",
    "cpu-modes",
    "bench-intloop",
    "bench-mmu",
];

/// The embedded image called `name`.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    match name {
        "guest-os" => Some(GUEST_OS),
        "cpu-alu" => Some(CPU_ALU),
        "cpu-exceptions" => Some(CPU_EXCEPTIONS),
        "cpu-paging" => Some(CPU_PAGING),
        "cpu-modes" => Some(CPU_MODES),
        "bench-intloop" => Some(BENCH_INTLOOP),
        "bench-mmu" => Some(BENCH_MMU),
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
