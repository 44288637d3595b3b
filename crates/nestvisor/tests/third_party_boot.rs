//! Issue 5 item 8: the board runs third-party bare-metal test programs shaped like
//! kvm-unit-tests' x86 binaries (`x86/flat.lds`, `x86/cstart64.S`, `lib/x86/setup.c`,
//! `lib/x86/fwcfg.c`): a multiboot1 ELF32 image linked at 4 MiB entered in 32-bit protected
//! mode, printing on the 16550 at 0x3F8, reading the CPU count and RAM size from fw_cfg
//! (ports 0x510/0x511) and from `NR_CPUS=`/`MEMSIZE=` lines of a module, taking its arguments
//! from the multiboot command line, whose first word is the program name, and ending through
//! the debug-exit port 0xF4.
//!
//! The test builds such an image (`support/third_party.rs`, from its ELF header to its machine
//! code with a small assembler: every instruction form with its opcode bytes, checked here
//! against iced-x86's decoder), runs it with `nestvisor run --bare IMAGE --module ENV --append ARGS --mem 64` and
//! under QEMU (`-kernel IMAGE -initrd ENV -append ARGS -m 64`), checks every line it prints and
//! its exit status, and requires the two machines to print the same lines except the last one,
//! the VMX bit of CPUID.1:ECX (QEMU's TCG has no VMX). The exit value is computed by the
//! program from what it read (RAM size, CPU count, argument count, failed checks), so a wrong
//! answer anywhere changes the status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

mod support;
#[path = "support/third_party.rs"]
mod third_party;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::Run;
use third_party::{APPEND, Asm, Cc, R, TEXT, build_image, expected, scratch, split_last, status};

const TIMEOUT: Duration = Duration::from_secs(60);

fn nestvisor(image: &Path, env: &Path, append: &str, mem_mib: u32) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
    command
        .args(["run", "--bare"])
        .arg(image)
        .arg("--module")
        .arg(env)
        .args(["--append", append, "--mem", &mem_mib.to_string()]);
    support::run_with_timeout(command, TIMEOUT)
}

fn qemu(image: &Path, env: &Path, append: &str, mem_mib: u32) -> Run {
    assert!(
        nestvisor::qemu::available(),
        "{} not found: install qemu-system-x86 (scripts/setup does) to run this test",
        nestvisor::qemu::BINARY
    );
    let mut command = nestvisor::qemu::command(image, append, u64::from(mem_mib));
    command.arg("-initrd").arg(env);
    support::run_with_timeout(command, TIMEOUT)
}

#[test]
fn kvm_unit_tests_shaped_program_on_nestvisor_and_qemu() {
    let image = scratch("prog.elf", &build_image());
    let env = scratch("env", b"NR_CPUS=1\nTESTNAME=third-party\nMEMSIZE=64\n");
    let want = expected(&image, &env, 64, 64, 0);

    let ours = nestvisor(&image, &env, APPEND, 64);
    let (body, last) = split_last(&ours.stdout);
    assert_eq!(body, want, "nestvisor output\n{}", ours.stdout);
    assert_eq!(last, "vmx=1", "nestvisor reports VMX in CPUID.1:ECX[5]");
    assert_eq!(ours.status, status(64 + 1 + 4), "nestvisor status");

    let reference = qemu(&image, &env, APPEND, 64);
    let (qbody, qlast) = split_last(&reference.stdout);
    assert_eq!(
        qbody, body,
        "QEMU and nestvisor differ\n--- QEMU ---\n{}",
        reference.stdout
    );
    assert!(
        qlast == "vmx=0" || qlast == "vmx=1",
        "QEMU's last line {qlast:?}"
    );
    assert_eq!(reference.status, ours.status, "QEMU status");

    std::fs::remove_file(&image).ok();
    std::fs::remove_file(&env).ok();
}

#[test]
fn exit_status_follows_what_the_program_read() {
    let image = scratch("prog2.elf", &build_image());
    // 128 MiB everywhere: RAM size 0x8000000, exit (128 + 1 + 4) & 0x7f = 5.
    let env = scratch("env128", b"NR_CPUS=1\nMEMSIZE=128\n");
    let run = nestvisor(&image, &env, APPEND, 128);
    let (body, _) = split_last(&run.stdout);
    assert_eq!(body, expected(&image, &env, 128, 128, 0), "{}", run.stdout);
    assert_eq!(run.status, status(5));
    // The module says 64 MiB but the board has 32: the program sees the mismatch.
    let env64 = scratch("env64", b"NR_CPUS=1\nMEMSIZE=64\n");
    let run = nestvisor(&image, &env64, APPEND, 32);
    let (body, _) = split_last(&run.stdout);
    assert_eq!(body, expected(&image, &env64, 32, 64, 1), "{}", run.stdout);
    assert_eq!(run.status, status(32 + 1 + 4 + 16));
    for p in [image, env, env64] {
        std::fs::remove_file(p).ok();
    }
}

/// Every instruction form of the assembler, decoded by iced-x86 in 32-bit mode: the bytes are
/// the instruction the comment in the encoder names.
#[test]
fn assembler_encodings_decode_as_intended() {
    use iced_x86::{Decoder, DecoderOptions, FastFormatter};
    type Emit = fn(&mut Asm);
    let cases: &[(Emit, &str)] = &[
        (|a| a.mov_ri(R::Esp, 0x41_3000), "mov esp,413000h"),
        (|a| a.mov_r_abs(R::Ecx, 0x41_0100), "mov ecx,[410100h]"),
        (|a| a.mov_abs_r(0x41_0104, R::Ebx), "mov [410104h],ebx"),
        (|a| a.mov_abs_al(0x41_0004), "mov [410004h],al"),
        (|a| a.mov_r_disp8(R::Esi, R::Ebx, 16), "mov esi,[ebx+10h]"),
        (|a| a.mov_r_disp8(R::Eax, R::Edi, 0), "mov eax,[edi]"),
        (|a| a.mov_al_mem(R::Edi), "mov al,[edi]"),
        (|a| a.mov_al_imm(0x80), "mov al,80h"),
        (
            |a| a.movzx_r_mem8(R::Ecx, R::Esi),
            "movzx ecx,byte ptr [esi]",
        ),
        (|a| a.movzx_r_al(R::Ecx), "movzx ecx,al"),
        (|a| a.mov_rr(R::Ebx, R::Eax), "mov ebx,eax"),
        (
            |a| a.cmp_abs_imm(0x41_0104, 0x2bad_b002),
            "cmp dword ptr [410104h],2BADB002h",
        ),
        (|a| a.cmp_ri(R::Ecx, 9), "cmp ecx,9h"),
        (|a| a.cmp_r_abs(R::Esi, 0x41_0118), "cmp esi,[410118h]"),
        (|a| a.cmp_mem8_imm(R::Esi, b' '), "cmp byte ptr [esi],20h"),
        (|a| a.cmp_al_mem(R::Esi), "cmp al,[esi]"),
        (|a| a.cmp_al_imm(10), "cmp al,0Ah"),
        (|a| a.test_al_imm(0x20), "test al,20h"),
        (
            |a| a.test_abs_imm(0x41_0108, 0x40),
            "test dword ptr [410108h],40h",
        ),
        (|a| a.test_rr(R::Eax, R::Eax), "test eax,eax"),
        (|a| a.inc_abs(0x41_010c), "inc dword ptr [41010Ch]"),
        (|a| a.inc_r(R::Esi), "inc esi"),
        (|a| a.dec_r(R::Ecx), "dec ecx"),
        (|a| a.add_ri(R::Esi, 8), "add esi,8h"),
        (|a| a.add_rr(R::Eax, R::Ecx), "add eax,ecx"),
        (|a| a.add_r_abs(R::Eax, 0x41_0124), "add eax,[410124h]"),
        (|a| a.add_al_imm(b'0'), "add al,30h"),
        (|a| a.sub_ri(R::Ecx, 0x30), "sub ecx,30h"),
        (|a| a.and_ri(R::Eax, 0x7f), "and eax,7Fh"),
        (|a| a.or_rr(R::Eax, R::Ecx), "or eax,ecx"),
        (|a| a.shl_ri(R::Eax, 20), "shl eax,14h"),
        (|a| a.shr_ri(R::Ecx, 5), "shr ecx,5h"),
        (|a| a.shr_r_cl(R::Eax), "shr eax,cl"),
        (|a| a.imul_rri8(R::Eax, 10), "imul eax,eax,0Ah"),
        (|a| a.push(R::Edx), "push edx"),
        (|a| a.pop(R::Edi), "pop edi"),
        (|a| a.ret(), "ret"),
        (|a| a.in_al_dx(), "in al,dx"),
        (|a| a.out_dx_al(), "out dx,al"),
        (|a| a.out_dx_ax(), "out dx,ax"),
        (|a| a.out_dx_eax(), "out dx,eax"),
        (|a| a.cpuid(), "cpuid"),
        (|a| a.cli(), "cli"),
        (|a| a.hlt(), "hlt"),
        (
            |a| {
                let l = a.label();
                a.bind(l);
                a.jcc(Cc::Ae, l);
            },
            "jae 400000h",
        ),
        (
            |a| {
                let l = a.label();
                a.jmp(l);
                a.bind(l);
            },
            "jmp 400005h",
        ),
        (
            |a| {
                let l = a.label();
                a.call(l);
                a.bind(l);
            },
            "call 400005h",
        ),
        (
            |a| {
                let l = a.label();
                a.bind(l);
                a.mov_r_label(R::Edi, l);
            },
            "mov edi,400000h",
        ),
    ];
    let mut formatter = FastFormatter::new();
    let mut wrong = Vec::new();
    for (emit, want) in cases {
        let mut a = Asm::new(TEXT);
        emit(&mut a);
        let bytes = a.finish();
        let mut decoder = Decoder::with_ip(32, &bytes, u64::from(TEXT), DecoderOptions::NONE);
        let insn = decoder.decode();
        let mut text = String::new();
        formatter.format(&insn, &mut text);
        if text != *want || insn.len() != bytes.len() {
            wrong.push(format!(
                "{bytes:02x?}: decoded {text:?} ({} bytes), wanted {want:?}",
                insn.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
