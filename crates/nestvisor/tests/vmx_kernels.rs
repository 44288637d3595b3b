//! The VMX test programs (`guests/cputests/src/bin/vmx-*`, `docs/testing.md` "The VMX
//! programs") under `nestvisor run --bare`: each one must pass all its own checks (debug-exit
//! status 0, a `summary` line with `failures=0` and the expected number of checks, no `FAIL`
//! line). QEMU's TCG has no VMX, so there is no second machine to compare with: the programs
//! compare every result with the value the SDM prescribes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

mod support;

use std::time::Duration;
use support::{Run, image};

/// Process status of a run that wrote 0 (all checks passed) to the debug-exit port.
const STATUS_PASS: i32 = 1;
const MEM_MIB: u32 = 128;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `program` and checks its verdict and its number of checks (fewer would mean a part of
/// it did not run).
fn passes(program: &str, checks: u32) {
    let run: Run = support::nestvisor(&image(program), "", MEM_MIB, TIMEOUT);
    let summary = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("summary {program}: ")))
        .unwrap_or_else(|| {
            panic!(
                "{program}: no summary line (status {:?})\n--- output ---\n{}",
                run.status, run.stdout
            )
        });
    let fields: Vec<&str> = summary.split_whitespace().collect();
    assert!(
        fields.contains(&"failures=0") && !run.stdout.contains("FAIL"),
        "{program}: {summary}\n--- output ---\n{}",
        run.stdout
    );
    assert!(
        fields.contains(&format!("checks={checks}").as_str()),
        "{program}: expected checks={checks}: {summary}"
    );
    assert_eq!(
        run.status,
        Some(STATUS_PASS),
        "{program}: wrong exit status\n--- output ---\n{}",
        run.stdout
    );
}

/// VMXON/VMXOFF, VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMCALL in root operation: #UD,
/// #GP, VMfailInvalid and every reachable VM-instruction error number.
#[test]
fn vmx_insns() {
    passes("vmx-insns", 155);
}

/// VM-entry checks: controls (error 7), host state (error 8), guest state and the VMCS link
/// pointer (exit 0x80000021), MSR loading (exit 0x80000022), host state after exits.
#[test]
fn vmx_entry() {
    passes("vmx-entry", 213);
}

/// VM exits of non-root operation, their qualifications and instruction information, the
/// exception bitmap, the preemption timer, interrupt and NMI windows, event injection, MSR
/// lists.
#[test]
fn vmx_exits() {
    passes("vmx-exits", 259);
}

/// EPT translation, violations, misconfigurations, A/D flags, INVEPT, VPIDs and INVVPID, an
/// unrestricted real-mode guest.
#[test]
fn vmx_ept() {
    passes("vmx-ept", 83);
}

/// VMCS shadowing with VMREAD/VMWRITE bitmaps.
#[test]
fn vmx_shadow() {
    passes("vmx-shadow", 26);
}
