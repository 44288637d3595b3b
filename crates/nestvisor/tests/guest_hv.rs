//! guest-hv, the hypervisor of `crates/hv` on real VMX instructions, on the hardware model
//! (issue 7 item 2): `nestvisor run --bare guest-hv --module guest-os --append ARGS` runs
//! guest-os as guest-hv's guest, and every workload gives the same result line as guest-os on
//! the bare board; the guest's debug-exit value passes through guest-hv; guest-hv's further
//! modules reach its guest: the third-party program of `third_party_boot.rs`, run as the
//! guest with its module as guest-hv's second one, prints what it prints on the bare board;
//! guest-hv refuses, with a message, to run without a guest image or with more guest RAM than
//! the machine has.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;
#[path = "support/third_party.rs"]
mod third_party;

use std::ffi::OsString;
use std::path::Path;
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

/// `nestvisor run --bare guest-hv --module M… --append APPEND --mem MIB`.
fn guest_hv_with(append: &str, modules: &[OsString], mem_mib: u32) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
    command
        .args(["run", "--bare"])
        .arg(image("guest-hv"))
        .args(["--append", append, "--mem", &mem_mib.to_string()]);
    for m in modules {
        command.arg("--module").arg(m);
    }
    run_with_timeout(command, TIMEOUT)
}

/// guest-hv with `module` (an embedded image) as its module (guest RAM 64 MiB inside a
/// 256 MiB board).
fn guest_hv(append: &str, module: Option<&str>) -> Run {
    let modules: Vec<OsString> = module.iter().map(|m| image(m).into()).collect();
    guest_hv_with(append, &modules, 256)
}

/// `nestvisor run --bare IMAGE --module M… --append APPEND --mem MIB`.
fn bare_with(image: &Path, modules: &[OsString], append: &str, mem_mib: u32) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
    command.args(["run", "--bare"]).arg(image).args([
        "--append",
        append,
        "--mem",
        &mem_mib.to_string(),
    ]);
    for m in modules {
        command.arg("--module").arg(m);
    }
    run_with_timeout(command, TIMEOUT)
}

fn result_line(out: &str) -> Option<&str> {
    out.lines()
        .find_map(|l| l.split("result ").nth(1).filter(|_| l.contains("result ")))
}

#[test]
fn every_workload_gives_the_bare_result_under_guest_hv() {
    every_workload_gives_the_bare_result("");
}

#[test]
fn every_workload_gives_the_bare_result_under_guest_hv_on_shadow_paging() {
    every_workload_gives_the_bare_result("mmu=shadow ");
}

fn every_workload_gives_the_bare_result(hv_args: &str) {
    for append in SMOKE {
        let bare = nestvisor(&image("guest-os"), append, 64, TIMEOUT);
        let nested = guest_hv(&format!("{hv_args}{append}"), Some("guest-os"));
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

#[test]
fn guest_hv_refuses_more_guest_ram_than_the_machine_has() {
    // 256 MiB of guest RAM in a 256 MiB machine that also holds guest-hv and guest-os.
    let run = guest_hv_with("mem=256 cpu", &[image("guest-os").into()], 256);
    assert_eq!(run.status, Some(0xfd), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("guest-hv: 256 MiB of guest RAM do not fit in the machine's memory"),
        "{}",
        run.stdout
    );
    // The same guest RAM fits a larger machine.
    let run = guest_hv_with("mem=256 cpu iters=200", &[image("guest-os").into()], 512);
    assert_eq!(run.status, Some(1), "{}", run.stdout);
}

/// The third-party program as guest-hv's guest, its modules guest-hv's modules 2..n: it prints
/// every line it prints on the bare board with the same modules (the information flags, the
/// command line word by word, the module count, the first module's string and contents, the
/// RAM size from fw_cfg), tagged `[L1] `, and ends with the same status. Only its last line,
/// CPUID's VMX bit, differs: the hypervisor hides VMX from its guest.
#[test]
fn guest_hv_passes_its_further_modules_to_the_guest() {
    let program = third_party::scratch("guest-hv-prog.elf", &third_party::build_image());
    let env = third_party::scratch("guest-hv-env", b"NR_CPUS=1\nMEMSIZE=64\n");
    let extra = third_party::scratch("guest-hv-extra", &[0x5a; 5000]);
    let one: Vec<OsString> = vec![env.clone().into()];
    let mut three = one.clone();
    three.push(format!("{} some args", extra.display()).into());
    three.push(env.clone().into());
    for (modules, count) in [(&one, 1), (&three, 3)] {
        let bare = bare_with(&program, modules, third_party::APPEND, 64);
        let (bare_body, bare_last) = third_party::split_last(&bare.stdout);
        assert_eq!(bare_last, "vmx=1", "{}", bare.stdout);
        assert!(
            bare_body.contains(&format!("\nmods={count}\n")),
            "{}",
            bare.stdout
        );
        if count == 1 {
            assert_eq!(
                bare_body,
                third_party::expected(&program, &env, 64, 64, 0),
                "{}",
                bare.stdout
            );
        }

        let mut nested_modules = vec![program.clone().into()];
        nested_modules.extend(modules.iter().cloned());
        let append = format!("mem=64 {}", third_party::APPEND);
        let nested = guest_hv_with(&append, &nested_modules, 256);
        let lines: Vec<&str> = nested.stdout.lines().collect();
        let untagged: Vec<&str> = lines
            .iter()
            .map(|l| {
                l.strip_prefix("[L1] ")
                    .unwrap_or_else(|| panic!("untagged line {l:?}"))
            })
            .collect();
        let (last, body) = untagged.split_last().expect("output under guest-hv");
        assert_eq!(
            body.iter().map(|l| format!("{l}\n")).collect::<String>(),
            bare_body,
            "{count} module(s) under guest-hv:\n{}",
            nested.stdout
        );
        assert_eq!(*last, "vmx=0", "{}", nested.stdout);
        assert_eq!(nested.status, bare.status, "{}", nested.stdout);
        assert_eq!(nested.status, third_party::status(64 + 1 + 4));
    }
    for p in [program, env, extra] {
        std::fs::remove_file(p).ok();
    }
}
