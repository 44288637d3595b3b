//! guest-hv, the hypervisor of `crates/hv` on real VMX instructions, on the hardware model
//! (issue 7 item 2): `nestvisor run --bare guest-hv --module guest-os --append ARGS` runs
//! guest-os as guest-hv's guest, and every workload gives the same result line as guest-os on
//! the bare board; the guest's debug-exit value passes through guest-hv; guest-hv refuses,
//! with a message, to run without a guest image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::process::Command;
use std::time::Duration;
use support::{Run, image, nestvisor, run_with_timeout};

const SMOKE: &[&str] = &[
    "kbuild jobs=4 parallel=2 kib=32",
    "memtouch mib=2 passes=2",
    "ptchurn rounds=8 pages=80",
    "cpu iters=20000",
    "syscall calls=5000",
    "io lines=8 width=48",
];

const TIMEOUT: Duration = Duration::from_secs(300);

/// guest-hv with guest-os as its module (guest RAM 64 MiB inside a 256 MiB board).
fn guest_hv(append: &str, module: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
    command
        .args(["run", "--bare"])
        .arg(image("guest-hv"))
        .args(["--append", append, "--mem", "256"]);
    if let Some(m) = module {
        command.arg("--module").arg(image(m));
    }
    run_with_timeout(command, TIMEOUT)
}

fn result_line(out: &str) -> Option<&str> {
    out.lines()
        .find_map(|l| l.split("result ").nth(1).filter(|_| l.contains("result ")))
}

#[test]
fn every_workload_gives_the_bare_result_under_guest_hv() {
    for append in SMOKE {
        let bare = nestvisor(&image("guest-os"), append, 64, TIMEOUT);
        let nested = guest_hv(append, Some("guest-os"));
        assert_eq!(bare.status, Some(1), "{append}: bare\n{}", bare.stdout);
        assert_eq!(
            nested.status,
            Some(1),
            "{append}: guest-hv\n{}",
            nested.stdout
        );
        let want = result_line(&bare.stdout).expect("a result line on bare");
        assert_eq!(
            result_line(&nested.stdout),
            Some(want),
            "{append}:\n{}",
            nested.stdout
        );
        assert!(
            nested.stdout.lines().all(|l| l.starts_with("[L1] ")),
            "the guest's lines are tagged:\n{}",
            nested.stdout
        );
    }
}

#[test]
fn the_guests_exit_status_passes_through_guest_hv() {
    // guest-os ends an unknown workload with debug-exit value 1: status 3.
    let run = guest_hv("no-such-workload", Some("guest-os"));
    assert_eq!(run.status, Some(3), "{}", run.stdout);
}

#[test]
fn guest_hv_refuses_without_a_guest_image() {
    let run = guest_hv("cpu", None);
    // EXIT_REFUSED (0x7e): status (0x7e << 1) | 1, low 8 bits.
    assert_eq!(run.status, Some(0xfd), "{}", run.stdout);
    assert!(
        run.stdout.contains("guest-hv: no guest image"),
        "{}",
        run.stdout
    );
}
