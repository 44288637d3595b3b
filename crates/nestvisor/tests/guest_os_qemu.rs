//! guest-os under QEMU and nestvisor: every workload at its smoke size boots, prints exactly one well-formed
//! result line and exits with status 0 through the debug-exit port; the checksums do not depend
//! on the memory size; bad command lines and faulting user programs behave as documented
//! (`docs/guest-os.md`).
//!
//! The runners are listed in [`runners`]: each boots an image file with a command line and
//! returns the serial output and the process status: QEMU (TCG) and `nestvisor run --bare`.
//! Every check runs on both, and the result lines must agree between them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use support::Run;

/// Each workload with its smoke-size parameters (a few seconds under QEMU TCG at most).
const SMOKE: &[(&str, &str)] = &[
    ("kbuild", "kbuild jobs=4 parallel=2 kib=32"),
    ("memtouch", "memtouch mib=2 passes=2"),
    // 80 pages: mprotect and munmap change more than 32 pages at once, so the kernel's
    // flushing CR3 load is exercised as well as INVLPG.
    ("ptchurn", "ptchurn rounds=8 pages=80"),
    ("cpu", "cpu iters=20000"),
    ("syscall", "syscall calls=5000"),
    ("io", "io lines=8 width=48"),
];

/// Process status of a run that wrote 0 (success) to the debug-exit port: (0 << 1) | 1.
const STATUS_SUCCESS: i32 = 1;
/// Process status for guest status 1 (bad command line): (1 << 1) | 1.
const STATUS_USAGE: i32 = 3;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Boots `image` with command line `append` and `mem_mib` MiB of RAM.
type Runner = fn(image: &Path, append: &str, mem_mib: u32) -> Run;

/// Every machine the image must behave identically on: QEMU (TCG) and the project's own board
/// (`nestvisor run --bare`). Every test below runs on each and compares across them.
fn runners() -> Vec<(&'static str, Runner)> {
    vec![("qemu", run_qemu), ("nestvisor", run_nestvisor)]
}

/// The single `result <workload> checksum=<16 hex digits>` line of a run.
fn result_line(run: &Run, workload: &str) -> String {
    let results: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("result "))
        .collect();
    assert_eq!(
        results.len(),
        1,
        "expected exactly one result line:\n{}",
        run.stdout
    );
    let line = results[0];
    let checksum = line
        .strip_prefix(&format!("result {workload} checksum="))
        .unwrap_or_else(|| panic!("malformed result line {line:?}"));
    assert!(
        checksum.len() == 16
            && checksum
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "checksum is not 16 lowercase hex digits: {line:?}"
    );
    line.to_string()
}

fn assert_status(run: &Run, expected: i32, what: &str) {
    assert_eq!(
        run.status,
        Some(expected),
        "{what}: wrong exit status\n--- output ---\n{}",
        run.stdout
    );
}

#[test]
fn every_workload_gives_the_same_result_everywhere_and_for_every_memory_size() {
    for (workload, append) in SMOKE {
        let mut lines = Vec::new();
        for (name, runner) in runners() {
            for mem in [64, 256] {
                let run = runner(image(), append, mem);
                assert_status(&run, STATUS_SUCCESS, &format!("{name} {append} -m {mem}"));
                lines.push((format!("{name} -m {mem}"), result_line(&run, workload)));
            }
        }
        let (first_where, first) = &lines[0];
        for (place, line) in &lines[1..] {
            assert_eq!(line, first, "{append}: {place} differs from {first_where}");
        }
    }
}

#[test]
fn different_parameters_give_different_checksums() {
    // A checksum computed from the work changes with the work.
    for (name, runner) in runners() {
        let small = result_line(&runner(image(), "cpu iters=1000", 64), "cpu");
        let large = result_line(&runner(image(), "cpu iters=1001", 64), "cpu");
        assert_ne!(small, large, "{name}: cpu checksum ignores its work");
        let a = result_line(
            &runner(image(), "kbuild jobs=2 parallel=2 kib=64", 64),
            "kbuild",
        );
        let b = result_line(
            &runner(image(), "kbuild jobs=3 parallel=2 kib=64", 64),
            "kbuild",
        );
        assert_ne!(a, b, "{name}: kbuild checksum ignores its jobs");
    }
}

#[test]
fn kbuild_result_does_not_depend_on_parallelism() {
    for (name, runner) in runners() {
        let serial = result_line(
            &runner(image(), "kbuild jobs=5 parallel=1 kib=64", 64),
            "kbuild",
        );
        let parallel = result_line(
            &runner(image(), "kbuild jobs=5 parallel=5 kib=64", 64),
            "kbuild",
        );
        assert_eq!(
            serial, parallel,
            "{name}: kbuild result depends on how many jobs run at once"
        );
    }
}

#[test]
fn unknown_workload_is_refused() {
    for (name, runner) in runners() {
        let run = runner(image(), "bogus", 64);
        assert_status(&run, STATUS_USAGE, name);
        assert!(
            run.stdout.contains("unknown workload 'bogus'"),
            "{name}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains("result "), "{name}: {}", run.stdout);

        let run = runner(image(), "", 64);
        assert_status(&run, STATUS_USAGE, name);
        assert!(
            run.stdout.contains("no workload given"),
            "{name}: {}",
            run.stdout
        );
    }
}

#[test]
fn malformed_parameters_are_refused() {
    // Longer than exec's argument limit (1024 bytes).
    let long = format!("cpu{}", " iters=1".repeat(150));
    let cases = [
        ("cpu iters=abc", "'abc' is not a number"),
        ("cpu iters", "malformed parameter 'iters'"),
        ("cpu nope=3", "unknown parameter 'nope'"),
        ("memtouch mib=0", "out of range"),
        ("kbuild fault=meteor", "unknown fault 'meteor'"),
        (long.as_str(), "command line too long"),
    ];
    for (name, runner) in runners() {
        for (append, message) in cases {
            let run = runner(image(), append, 64);
            assert_status(&run, STATUS_USAGE, &format!("{name} {append}"));
            assert!(
                run.stdout.contains(message),
                "{name} {append}: expected {message:?} in\n{}",
                run.stdout
            );
            assert!(
                !run.stdout.contains("result "),
                "{name} {append}: {}",
                run.stdout
            );
        }
    }
}

#[test]
fn a_faulting_user_program_is_killed_and_the_kernel_carries_on() {
    let faults = [
        ("null", "page fault: write to 0x0 (not present)"),
        (
            "kernel",
            "page fault: read from 0xffffffff80100000 (protection violation)",
        ),
        ("text", "(protection violation): region is not writable"),
        ("ud", "#UD invalid opcode"),
        ("gp", "#GP general protection"),
        ("de", "#DE divide error"),
        // A write after mprotect(PROT_READ): faults only if the kernel invalidated the
        // writable translation.
        (
            "mprotect",
            "write to 0x100000000000 (protection violation): region is not writable",
        ),
    ];
    for (name, runner) in runners() {
        let clean = result_line(&runner(image(), "syscall calls=500", 64), "syscall");
        for (kind, message) in faults {
            let run = runner(image(), &format!("syscall calls=500 fault={kind}"), 64);
            assert_status(&run, STATUS_SUCCESS, &format!("{name} fault={kind}"));
            let killed = run.stdout.lines().find(|l| l.contains("(fault) killed:"));
            let killed = killed
                .unwrap_or_else(|| panic!("{name} fault={kind}: no kill message\n{}", run.stdout));
            assert!(
                killed.contains(message),
                "{name} fault={kind}: {killed:?} lacks {message:?}"
            );
            assert_eq!(
                result_line(&run, "syscall"),
                clean,
                "{name} fault={kind}: the workload changed"
            );
        }
    }
}

#[test]
fn running_out_of_memory_kills_the_process_not_the_kernel() {
    // 100 MiB of first touches in a 64-MiB machine: the page fault that finds no free frame
    // kills memtouch; init reports it and the run fails with guest status 2.
    for (name, runner) in runners() {
        let run = runner(image(), "memtouch mib=100 passes=0", 64);
        assert_status(&run, (2 << 1) | 1, name);
        assert!(
            run.stdout
                .contains("(memtouch) killed: page fault: write to"),
            "{name}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("out of memory"),
            "{name}: {}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("init: memtouch was killed by vector 14"),
            "{name}: {}",
            run.stdout
        );
    }
}

/// The guest-os image as a file (QEMU needs a path).
fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| support::image("guest-os"))
}

fn run_qemu(image: &Path, append: &str, mem_mib: u32) -> Run {
    support::qemu(image, append, mem_mib, TIMEOUT)
}

fn run_nestvisor(image: &Path, append: &str, mem_mib: u32) -> Run {
    support::nestvisor(image, append, mem_mib, TIMEOUT)
}
