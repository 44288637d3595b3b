//! The command line around the runs: exporting embedded images and naming them in `run`.

use std::process::Command;

fn nestvisor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nestvisor"))
}

#[test]
fn image_list_names_every_embedded_image() {
    let out = nestvisor().args(["image", "--list"]).output().unwrap();
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, nestvisor::images::NAMES);
}

#[test]
fn image_export_writes_the_embedded_bytes() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("exported-guest-os-{}.elf", std::process::id()));
    let status = nestvisor()
        .args(["image", "guest-os", "--out"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(written, nestvisor::images::by_name("guest-os").unwrap());
}

#[test]
fn image_export_of_an_unknown_name_is_a_usage_error() {
    let out = nestvisor()
        .args(["image", "no-such-image", "--out", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no embedded image \"no-such-image\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("guest-os"),
        "the message lists what exists: {stderr}"
    );
}

#[test]
fn run_boots_an_embedded_image_by_name() {
    // cpu-modes is the quickest of the CPU test programs; it ends with debug-exit value 0.
    let out = nestvisor()
        .args(["run", "--bare", "cpu-modes"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("summary cpu-modes:"), "{stdout}");
    assert!(stdout.contains("failures=0"), "{stdout}");
}

#[test]
fn run_of_a_name_that_is_neither_file_nor_image_fails_to_load() {
    let out = nestvisor()
        .args(["run", "--bare", "no-such-image"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no embedded image of that name"),
        "{stderr}"
    );
}

/// A smoke run of `bench cpu` at a tiny scale: both machines run both kernels, agree on their
/// output (the harness refuses to time a CPU that computes something else), and the table and
/// the JSON name every kernel. The figures themselves are not judged here: at this scale they
/// are mostly noise, and speed is measured with `nestvisor bench`, not with tests.
#[test]
fn bench_cpu_smoke_run_compares_both_machines() {
    let json = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-cpu-{}.json", std::process::id()));
    let out = nestvisor()
        .args([
            "bench",
            "cpu",
            "--scale",
            "0.005",
            "--repeats",
            "1",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for kernel in ["bench-intloop", "bench-mmu"] {
        assert!(stdout.contains(kernel), "{stdout}");
    }
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(
            row["instructions_per_unit"].as_f64().unwrap() > 0.0,
            "{row}"
        );
    }
}

/// `--explain-vmentry` names the SDM rule, the field and its value of every failed VM entry
/// (vmx-entry fails entries on purpose, one rule at a time).
#[test]
fn explain_vmentry_names_each_failed_check() {
    let out = nestvisor()
        .args(["run", "--bare", "vmx-entry", "--explain-vmentry"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "VMfailValid(7: VM entry with invalid control field(s)): SDM Vol. 3C §27.2.1.1",
        "CR3-target count (0x400a) = 0x5",
        "VMfailValid(8: VM entry with invalid host-state field(s)): SDM Vol. 3C §27.2.2",
        "VM-entry failure exit (reason 33 | 1<<31, qualification 4)",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // Without the option nothing is explained.
    let quiet = nestvisor()
        .args(["run", "--bare", "vmx-entry"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("VM entry at"));
}
