//! The built-in programs exec can start. They are real user code: one multi-call ELF
//! (`guests/user`, linked at 0x400000), compiled by the build script and embedded here, loaded
//! into fresh user pages by [`crate::elf`] on every exec; the program's name, passed at the top
//! of its stack, selects what it runs, as with a multi-call binary.

/// The user ELF, built by `build.rs` from `guests/user`.
static USER_ELF: &[u8] = include_bytes!(env!("GUEST_USER_ELF"));

/// Every name exec accepts.
pub const PROGRAMS: &[&str] = &[
    "init", "kbuild", "cc", "memtouch", "ptchurn", "cpu", "syscall", "io", "fault",
];

/// The programs init accepts as the workload on the command line.
pub const WORKLOADS: &[&str] = &["kbuild", "memtouch", "ptchurn", "cpu", "syscall", "io"];

/// The image of program `name`, if there is such a program.
pub fn image(name: &str) -> Option<&'static [u8]> {
    PROGRAMS.contains(&name).then_some(USER_ELF)
}
