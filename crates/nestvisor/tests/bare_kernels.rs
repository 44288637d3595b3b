//! The bare-metal CPU test programs and benchmark kernels (`guests/cputests`, `docs/testing.md`)
//! under QEMU (TCG) and under `nestvisor run --bare`: every program passes its own checks on
//! both machines (debug-exit status 0, a `summary` line with `failures=0` and the expected
//! number of checks), and the two machines print the same lines, one by one.
//!
//! The programs check the results they compute against the SDM; the comparison then catches
//! everything the programs only print (hashes of thousands of instruction results, error codes,
//! observed A/D flags) without a reference value in the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

mod support;

use std::path::Path;
use std::time::Duration;
use support::{Run, image};

/// Each test program with the number of checks its summary must report: fewer would mean a
/// part of it did not run (a feature it looks for in CPUID went missing, say).
const PROGRAMS: &[(&str, u32)] = &[
    ("cpu-alu", 188),
    ("cpu-exceptions", 99),
    ("cpu-paging", 30),
    ("cpu-paging-legacy", 84),
    ("cpu-modes", 46),
];

/// Process status of a run that wrote 0 (all checks passed) to the debug-exit port.
const STATUS_PASS: i32 = 1;
/// Process status for debug-exit value 2 (a command line the program cannot use).
const STATUS_USAGE: i32 = 5;

/// QEMU's CPU: qemu64 as an Intel processor (SYSENTER in 64-bit mode is Intel's) with the
/// features nestvisor's CPUID also reports and the programs look for (1-GiB pages, RDTSCP,
/// SMEP, SMAP). QEMU 7.2 TCG has no PCID, so the PCID part of cpu-paging runs
/// only on request (`pcid=1`).
const MEM_MIB: u32 = 128;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Checks that a run passed: status, and a summary line with no failures and `checks` checks
/// (when given).
fn assert_passed(run: &Run, program: &str, checks: Option<u32>, machine: &str) {
    assert_eq!(
        run.status,
        Some(STATUS_PASS),
        "{program} on {machine}: wrong exit status\n--- output ---\n{}",
        run.stdout
    );
    let summary = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("summary {program}: ")))
        .unwrap_or_else(|| panic!("{program} on {machine}: no summary line\n{}", run.stdout));
    let fields: Vec<&str> = summary.split_whitespace().collect();
    let checksum = fields
        .last()
        .and_then(|f| f.strip_prefix("checksum="))
        .unwrap_or("");
    assert!(
        checksum.len() == 16 && checksum.bytes().all(|b| b.is_ascii_hexdigit()),
        "{program} on {machine}: malformed summary {summary:?}"
    );
    assert!(
        fields.contains(&"failures=0"),
        "{program} on {machine}: {summary}"
    );
    if let Some(checks) = checks {
        assert!(
            fields.contains(&format!("checks={checks}").as_str()),
            "{program} on {machine}: expected checks={checks}: {summary}"
        );
    }
    assert!(
        !run.stdout.contains("FAIL"),
        "{program} on {machine}:\n{}",
        run.stdout
    );
}

/// Checks that two runs printed the same lines.
fn assert_same_output(program: &str, qemu: &Run, nestvisor: &Run) {
    let (a, b): (Vec<&str>, Vec<&str>) = (
        qemu.stdout.lines().collect(),
        nestvisor.stdout.lines().collect(),
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            x,
            y,
            "{program}: line {} differs (left: QEMU, right: nestvisor)",
            i + 1
        );
    }
    assert_eq!(
        a.len(),
        b.len(),
        "{program}: QEMU printed {} lines, nestvisor {}",
        a.len(),
        b.len()
    );
}

#[test]
fn every_test_program_passes_and_prints_the_same_under_qemu_and_nestvisor() {
    for &(program, checks) in PROGRAMS {
        let image = image(program);
        let qemu = run_qemu(&image, "");
        assert_passed(&qemu, program, Some(checks), "QEMU");
        let nestvisor = run_nestvisor(&image, "");
        assert_passed(&nestvisor, program, Some(checks), "nestvisor");
        assert_same_output(program, &qemu, &nestvisor);
    }
}

#[test]
fn benchmark_kernels_compute_the_same_checksums_under_qemu_and_nestvisor() {
    let cases = [
        ("bench-intloop", "iters", [20_000, 20_001]),
        ("bench-mmu", "rounds", [20, 21]),
    ];
    for (program, key, sizes) in cases {
        let image = image(program);
        let mut lines = Vec::new();
        for n in sizes {
            let append = format!("{key}={n}");
            let qemu = run_qemu(&image, &append);
            assert_passed(&qemu, program, None, "QEMU");
            let nestvisor = run_nestvisor(&image, &append);
            assert_passed(&nestvisor, program, None, "nestvisor");
            assert_same_output(program, &qemu, &nestvisor);
            let result = qemu
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("{program}: {key}={n} ")))
                .map(str::to_owned);
            lines.push(
                result.unwrap_or_else(|| panic!("{program}: no result line\n{}", qemu.stdout)),
            );
        }
        // The checksum follows the work: one more iteration or round changes it.
        let checksum = |l: &str| l.rsplit_once("checksum=").map(|(_, c)| c.to_owned());
        assert_ne!(
            checksum(&lines[0]),
            checksum(&lines[1]),
            "{program}: checksum ignores its size"
        );
    }
}

#[test]
fn benchmark_kernels_refuse_a_malformed_size() {
    for (program, append) in [("bench-intloop", "iters=lots"), ("bench-mmu", "rounds=-1")] {
        let image = image(program);
        for (machine, run) in [
            ("QEMU", run_qemu(&image, append)),
            ("nestvisor", run_nestvisor(&image, append)),
        ] {
            assert_eq!(
                run.status,
                Some(STATUS_USAGE),
                "{program} {append} on {machine}:\n{}",
                run.stdout
            );
            assert!(
                run.stdout.contains("usage:"),
                "{program} {append} on {machine}:\n{}",
                run.stdout
            );
        }
    }
}

/// What a hardware TLB keeps and the SDM allows to be dropped (a TLB may drop any entry at any
/// time, SDM Vol. 3A §5.10.1), and DESIGN.md §4 promises: a global translation survives a CR3
/// load (§5.10.4.1). QEMU TCG flushes everything on a CR3 load, so only nestvisor is asked.
#[test]
fn nestvisor_keeps_global_translations_across_cr3_loads() {
    let image = image("cpu-paging");
    let run = run_nestvisor(&image, "strict=1");
    assert_passed(&run, "cpu-paging", Some(31), "nestvisor");
    assert!(
        run.stdout
            .contains("global (strict): after-cr3-load global=0x6001"),
        "{}",
        run.stdout
    );
}

/// The same for PCIDs: a CR3 load with bit 63 set keeps the PCID's translations, one without
/// it drops them, INVPCID type 0 drops one address (§5.10.4.1, "INVPCID"). QEMU 7.2 TCG has no
/// PCID.
#[test]
fn nestvisor_keeps_pcid_translations_across_cr3_loads_with_bit_63() {
    let image = image("cpu-paging");
    let run = run_nestvisor(&image, "strict=1 pcid=1");
    assert_passed(&run, "cpu-paging", Some(36), "nestvisor");
}

/// The same in 32-bit protected mode (32-bit and PAE paging), plus two things QEMU 7.2 TCG does
/// not do: under PAE the PDPTEs are registers loaded by MOV to CR3, so a PDPTE rewritten in
/// memory is not used before the next CR3 load, INVLPG notwithstanding (SDM Vol. 3A §5.4.1;
/// QEMU reads them from memory on every walk), and a reserved-bit #PF sets P with RSVD (§5.7;
/// QEMU reports RSVD alone).
#[test]
fn nestvisor_keeps_pdpte_registers_and_cached_translations_in_legacy_paging() {
    let image = image("cpu-paging-legacy");
    let run = run_nestvisor(&image, "strict=1");
    assert_passed(&run, "cpu-paging-legacy", Some(90), "nestvisor");
    for line in [
        "32-bit invlpg (strict): rewritten-not-flushed=0x32000701",
        "pae pdpte (strict): rewritten-after-invlpg=0xae000801",
        "pae reserved bit 62 (strict): read=#PF(0x9)",
    ] {
        assert!(run.stdout.contains(line), "{line}\n{}", run.stdout);
    }
}

/// The program under QEMU.
fn run_qemu(image: &Path, append: &str) -> Run {
    support::qemu(image, append, MEM_MIB, TIMEOUT)
}

/// The program under `nestvisor run --bare`.
fn run_nestvisor(image: &Path, append: &str) -> Run {
    support::nestvisor(image, append, MEM_MIB, TIMEOUT)
}
