//! Builds the guest images (the `guests/` workspace, target x86_64-unknown-none, release) and
//! leaves them in OUT_DIR for `src/images.rs` to embed, so a fresh checkout runs with no extra
//! files.
//!
//! The guest build is a separate cargo invocation with a sanitized environment: nothing of this
//! build (its target, profile, flags, wrappers such as clippy-driver, jobserver, target dir)
//! may leak into a build for another target. Its target dir lives under OUT_DIR.

#![allow(clippy::expect_used, clippy::panic)] // a build script reports failure by panicking

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The images built, as (package, binary) in `guests/`.
const IMAGES: &[&str] = &["guest-os", "guest-hv"];
/// The package of the CPU test programs and benchmark kernels (`docs/testing.md`), and its
/// binaries, each an image.
const CPUTESTS_PACKAGE: &str = "guest-cputests";
const CPUTESTS_IMAGES: &[&str] = &[
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
const GUEST_TARGET: &str = "x86_64-unknown-none";

/// Variables a build script inherits that must not reach the guest build.
fn leaks_into_guest_build(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let exact = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_LINKER",
        "TARGET",
        "HOST",
        "PROFILE",
        "OUT_DIR",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "MAKEFLAGS",
        "MFLAGS",
    ];
    exact.contains(&name)
        || (name.starts_with("CARGO") && name != "CARGO_HOME")
        || name.starts_with("__CARGO")
        || name.starts_with("RUSTC_")
        || name.starts_with("DEP_")
}

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest.join("../../guests");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out.join("guests-target");

    for path in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "rt",
        "os",
        "user",
        "cputests",
        "hv",
        // guest-hv compiles the hypervisor core and what it depends on.
        "../crates/hv",
        "../crates/x86",
        "../crates/paging",
        "../crates/devices",
    ] {
        println!("cargo:rerun-if-changed={}", guests.join(path).display());
    }

    let mut command = Command::new(&cargo);
    command
        .current_dir(&guests)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in IMAGES {
        command.args(["-p", package]);
    }
    command.args(["-p", CPUTESTS_PACKAGE]);
    for (name, _) in env::vars_os() {
        if leaks_into_guest_build(&name) {
            command.env_remove(&name);
        }
    }
    // Cargo parses this script's stdout: the guest build's output goes to stderr.
    command.stdout(Stdio::from(std::io::stderr()));
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    if !status.success() {
        panic!(
            "building the guest images failed ({status}): `cargo build --release` in {} for {GUEST_TARGET}; \
             its errors are above",
            guests.display()
        );
    }

    for image in IMAGES.iter().chain(CPUTESTS_IMAGES) {
        let built = target_dir.join(GUEST_TARGET).join("release").join(image);
        let dest = out.join(format!("{image}.elf"));
        fs::copy(&built, &dest).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
}
