//! QEMU as the reference machine: `qemu-system-x86_64 -accel tcg -kernel IMAGE`, with the same
//! board features nestvisor's images rely on (COM1 on stdio, the isa-debug-exit device at port
//! 0xF4, no reboot on triple fault) and a CPU model whose CPUID matches what the images test for.
//! The guest images must give the same results under QEMU as under `nestvisor run --bare`; this
//! module is how the benchmarks invoke it.

use std::path::Path;
use std::process::Command;

/// The QEMU system emulator for x86-64 (Debian package `qemu-system-x86`).
pub const BINARY: &str = "qemu-system-x86_64";

/// The CPU model: QEMU's default `qemu64`, announced as GenuineIntel (the images take Intel
/// paths), with the features nestvisor's CPU implements and the test programs check:
/// 1-GiB pages, RDTSCP, SMEP and SMAP.
pub const CPU_MODEL: &str = "qemu64,vendor=GenuineIntel,+pdpe1gb,+rdtscp,+smep,+smap";

/// `qemu-system-x86_64 -accel tcg -kernel IMAGE -append APPEND` with `mem_mib` MiB of RAM, COM1
/// on stdout and the debug-exit device, ready to spawn.
pub fn command(image: &Path, append: &str, mem_mib: u64) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["-accel", "tcg", "-cpu", CPU_MODEL, "-kernel"])
        .arg(image)
        .args(["-append", append])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-no-reboot", "-m", &mem_mib.to_string()]);
    command
}

/// Whether QEMU can be started here.
pub fn available() -> bool {
    Command::new(BINARY)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}
