//! Build script of guest-hv: links it with the runtime's multiboot layout
//! (`guests/rt/link.ld`), as guest-os does.

#![allow(clippy::expect_used)] // a build script reports failure by panicking

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let link_ld = manifest.join("../rt/link.ld");
    println!("cargo:rerun-if-changed={}", link_ld.display());
    println!("cargo:rustc-link-arg-bins=-T{}", link_ld.display());
}
