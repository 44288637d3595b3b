//! Build script of guest-os: links the kernel with the runtime's multiboot layout, and compiles
//! the built-in user programs (`guests/user`) into one ELF that the kernel embeds and loads into
//! fresh user pages on exec.
//!
//! The user programs are compiled by invoking rustc directly rather than cargo: they need their
//! own code model and linker script (they live at 0x400000, the kernel in the top 2 GiB), and a
//! nested cargo would contend for the locks of the build that runs this script.

#![allow(clippy::expect_used)] // a build script reports failure by panicking

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest
        .parent()
        .expect("guests/os has a parent")
        .to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let kernel_ld = guests.join("rt/link.ld");
    println!("cargo:rerun-if-changed={}", kernel_ld.display());
    println!("cargo:rustc-link-arg-bins=-T{}", kernel_ld.display());

    let user = guests.join("user");
    println!("cargo:rerun-if-changed={}", user.display());
    let user_ld = user.join("user.ld");
    let user_elf = out.join("user.elf");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "--crate-name",
            "guest_user",
        ])
        .args(["--target", "x86_64-unknown-none"])
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args([
            "-C",
            "relocation-model=static",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "link-arg=-zmax-page-size=0x1000"])
        .arg("-C")
        .arg(format!("link-arg=-T{}", user_ld.display()))
        .arg("-o")
        .arg(&user_elf)
        .arg(user.join("src/main.rs"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cannot run rustc for the user programs");
    assert!(
        status.success(),
        "compiling the user programs (guests/user) failed"
    );
    println!("cargo:rustc-env=GUEST_USER_ELF={}", user_elf.display());
}
