//! guest-os as the guest of the native hypervisor (`nestvisor run --levels 1 --mmu ept|shadow`,
//! issue 6): every workload at its smoke size gives the same result line as on the bare
//! board under both MMUs, tagged with its level; the CPU test programs (4-level, 32-bit and
//! PAE paging among them) print the same lines; the debug-exit status passes through;
//! `--stats` is deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::process::Command;
use std::time::Duration;
use support::{Run, image, nestvisor, run_with_timeout};

/// Each workload at its smoke size (as in guest_os_qemu.rs).
const SMOKE: &[&str] = &[
    "kbuild jobs=4 parallel=2 kib=32",
    "memtouch mib=2 passes=2",
    "ptchurn rounds=8 pages=80",
    "cpu iters=20000",
    "syscall calls=5000",
    "io lines=8 width=48",
];

const TIMEOUT: Duration = Duration::from_secs(180);

/// `nestvisor run --levels 1 guest-os --append APPEND` with `extra` arguments.
fn levels(append: &str, extra: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
    command
        .args(["run", "--levels", "1"])
        .arg(image("guest-os"))
        .args(["--append", append, "--mem", "64"])
        .args(extra);
    run_with_timeout(command, TIMEOUT)
}

fn result_line(out: &str) -> Option<&str> {
    out.lines()
        .find_map(|l| l.split("result ").nth(1).filter(|_| l.contains("result ")))
}

#[test]
fn every_workload_gives_the_bare_result_at_l1() {
    every_workload_gives_the_bare_result("ept");
}

#[test]
fn every_workload_gives_the_bare_result_at_l1_on_shadow_paging() {
    every_workload_gives_the_bare_result("shadow");
}

fn every_workload_gives_the_bare_result(mmu: &str) {
    for append in SMOKE {
        let bare = nestvisor(&image("guest-os"), append, 64, TIMEOUT);
        let l1 = levels(append, &["--mmu", mmu]);
        assert_eq!(bare.status, Some(1), "{append}: bare\n{}", bare.stdout);
        assert_eq!(l1.status, Some(1), "{append}: L1 on {mmu}\n{}", l1.stdout);
        let want = result_line(&bare.stdout).expect("a result line on bare");
        assert_eq!(
            result_line(&l1.stdout),
            Some(want),
            "{append}:\n{}",
            l1.stdout
        );
        // Every line the guest printed is tagged with its level, and nothing else is lost.
        let tagged: Vec<&str> = l1.stdout.lines().collect();
        assert!(
            tagged.iter().all(|l| l.starts_with("[L1] ")),
            "{}",
            l1.stdout
        );
        let untagged: Vec<&str> = tagged.iter().map(|l| &l[5..]).collect();
        assert_eq!(
            untagged,
            bare.stdout.lines().collect::<Vec<_>>(),
            "{append}"
        );
    }
}

#[test]
fn the_guests_exit_status_passes_through() {
    // A command line guest-os cannot use: it ends with debug-exit value 1, status 3.
    let run = levels("no-such-workload", &[]);
    assert_eq!(run.status, Some(3), "{}", run.stdout);
}

#[test]
fn stats_are_deterministic_and_count_exits() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let files: Vec<_> = (0..2)
        .map(|i| dir.join(format!("levels-stats-{}-{i}.json", std::process::id())))
        .collect();
    for f in &files {
        let run = levels("memtouch mib=2 passes=2", &["--stats", f.to_str().unwrap()]);
        assert_eq!(run.status, Some(1), "{}", run.stdout);
    }
    let a = std::fs::read_to_string(&files[0]).unwrap();
    let b = std::fs::read_to_string(&files[1]).unwrap();
    assert_eq!(a, b, "two runs give identical stats");
    let json: serde_json::Value = serde_json::from_str(&a).unwrap();
    let l0 = &json["levels"][0];
    assert!(l0["exits"]["I/O instruction"].as_u64().unwrap() > 0, "{a}");
    assert!(l0["exits"]["EPT violation"].as_u64().unwrap() > 0, "{a}");
    assert!(
        l0["mmio_emulated"].as_u64().unwrap() > 0,
        "the APIC is emulated: {a}"
    );
    assert!(json["levels"][1]["instructions_retired"].as_u64().unwrap() > 100_000);
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
}

/// The CPU test programs (exceptions, paging and the TLB, privilege changes, every integer
/// instruction) print exactly the same lines as the guest of the hypervisor as on the bare
/// board: the hypervisor changes nothing a program can observe.
#[test]
fn the_cpu_test_programs_print_the_same_at_l1() {
    the_cpu_test_programs_print_the_same("ept");
}

/// Shadow paging under the same programs: cpu-paging's 4-level checks (A/D flags, CR0.WP,
/// SMEP/SMAP, INVLPG and CR3 flushes) and cpu-paging-legacy's 32-bit and PAE guests, whose
/// page faults the hypervisor walks and injects.
#[test]
fn the_cpu_test_programs_print_the_same_at_l1_on_shadow_paging() {
    the_cpu_test_programs_print_the_same("shadow");
}

fn the_cpu_test_programs_print_the_same(mmu: &str) {
    for program in [
        "cpu-alu",
        "cpu-exceptions",
        "cpu-paging",
        "cpu-modes",
        "cpu-paging-legacy",
    ] {
        let bare = nestvisor(&image(program), "", 64, TIMEOUT);
        let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
        command
            .args(["run", "--levels", "1", "--mmu", mmu])
            .arg(image(program))
            .args(["--mem", "64"]);
        let l1 = run_with_timeout(command, TIMEOUT);
        assert_eq!(bare.status, Some(1), "{program}: bare\n{}", bare.stdout);
        assert_eq!(l1.status, Some(1), "{program}: L1 on {mmu}\n{}", l1.stdout);
        let untagged: Vec<&str> = l1
            .stdout
            .lines()
            .map(|l| l.strip_prefix("[L1] ").unwrap_or(l))
            .collect();
        assert_eq!(
            untagged,
            bare.stdout.lines().collect::<Vec<_>>(),
            "{program}"
        );
    }
}

#[test]
fn shadow_paging_stats_count_the_shadow_mmu() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("levels-shadow-stats-{}.json", std::process::id()));
    let run = levels(
        "kbuild jobs=4 parallel=2 kib=32",
        &["--mmu", "shadow", "--stats", file.to_str().unwrap()],
    );
    assert_eq!(run.status, Some(1), "{}", run.stdout);
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mmu = &json["levels"][0]["mmu"];
    assert_eq!(mmu["mode"], "shadow", "{text}");
    // Processes come and go: page faults are fixed in the shadow, writes to page tables
    // emulated or made unsync, roots built and taken again from the cache.
    for key in [
        "shadow_page_faults",
        "guest_page_faults_injected",
        "write_protection_emulations",
        "unsync",
        "resync",
        "roots_built",
        "roots_reused",
    ] {
        assert!(mmu[key].as_u64().unwrap() > 0, "{key}: {text}");
    }
    assert_eq!(
        json["levels"][0]["exits"]["EPT violation"],
        serde_json::Value::Null
    );
}
