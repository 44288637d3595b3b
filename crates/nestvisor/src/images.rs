//! The guest images, built from `guests/` by `build.rs` (target x86_64-unknown-none, release)
//! and embedded in the program, so a fresh checkout runs with no extra files.
//!
//! Each image is a multiboot1 kernel (multiboot spec 0.6.96 §3.1, with the a.out-kludge
//! addresses): `qemu-system-x86_64 -kernel` and the board's own loader boot the same bytes.

/// guest-os: the multitasking kernel with the workloads (`docs/guest-os.md`).
pub static GUEST_OS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-os.elf"));

/// Names of the embedded images, for `nestvisor image NAME`.
pub const NAMES: &[&str] = &["guest-os"];

/// The embedded image called `name`.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    match name {
        "guest-os" => Some(GUEST_OS),
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
