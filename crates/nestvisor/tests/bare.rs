//! `nestvisor run --bare` end to end: tiny multiboot kernels assembled here (the bytes with
//! their disassembly), run by the built binary; the tests check serial output on stdout, the
//! exit status of every ending (docs/board.md) and the one-line reason on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

use std::path::PathBuf;
use std::process::{Command, Output};

const MAGIC: u32 = 0x1bad_b002;
const LOAD: u32 = 0x10_0000;

/// An a.out-kludge multiboot image (flags: memory info + address fields) loaded at 1 MiB
/// whose entry point is `code`, right after the 32-byte header.
fn aout_kernel(code: &[u8]) -> Vec<u8> {
    let flags = (1 << 16) | (1 << 1);
    let mut v = Vec::new();
    for w in [
        MAGIC,
        flags,
        0u32.wrapping_sub(MAGIC.wrapping_add(flags)),
        LOAD,
        LOAD,
        0,
        0,
        LOAD + 32,
    ] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(code);
    v
}

/// An ELF32 multiboot image: one PT_LOAD at 1 MiB with the header, then `code` (the entry).
fn elf32_kernel(code: &[u8]) -> Vec<u8> {
    let flags = 1u32 << 1;
    let mut seg = Vec::new();
    for w in [MAGIC, flags, 0u32.wrapping_sub(MAGIC.wrapping_add(flags))] {
        seg.extend_from_slice(&w.to_le_bytes());
    }
    seg.extend_from_slice(code);
    let mut v = Vec::new();
    v.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&3u16.to_le_bytes()); // EM_386
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&(LOAD + 12).to_le_bytes()); // e_entry
    v.extend_from_slice(&52u32.to_le_bytes()); // e_phoff
    v.extend_from_slice(&[0; 8]); // e_shoff, e_flags
    for h in [52u16, 32, 1, 40, 0, 0] {
        v.extend_from_slice(&h.to_le_bytes());
    }
    for w in [
        1u32,
        84,
        LOAD,
        LOAD,
        seg.len() as u32,
        seg.len() as u32,
        7,
        0x1000,
    ] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(&seg);
    v
}

/// Writes "hi\n" to COM1, then 0x10 to the debug-exit port.
const HI_THEN_EXIT: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'h', // mov al, 'h'
    0xee, // out dx, al
    0xb0, b'i', // mov al, 'i'
    0xee, // out dx, al
    0xb0, b'\n', // mov al, 0x0a
    0xee,  // out dx, al
    0x66, 0xba, 0xf4, 0x00, // mov dx, 0xf4
    0xb8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
    0xef, // out dx, eax
    0xf4, // hlt (not reached)
];

/// Checks EAX = 0x2BADB002, then prints the kernel command line, the first module's command
/// line and the module's contents (a C string), one per line, and exits with 0x10 (0x03 if
/// EAX was wrong).
const PRINT_BOOT_INFO: &[u8] = &[
    0xbc, 0x00, 0x00, 0x09, 0x00, //  0: mov esp, 0x90000
    0x3d, 0x02, 0xb0, 0xad, 0x2b, //  5: cmp eax, 0x2badb002
    0x75, 0x27, // 10: jne bad (51)
    0x8b, 0x73, 0x10, // 12: mov esi, [ebx+0x10]   ; cmdline
    0xe8, 0x29, 0x00, 0x00, 0x00, // 15: call puts (61)
    0x8b, 0x43, 0x18, // 20: mov eax, [ebx+0x18]   ; mods_addr
    0x8b, 0x70, 0x08, // 23: mov esi, [eax+8]      ; module string
    0xe8, 0x1e, 0x00, 0x00, 0x00, // 26: call puts
    0x8b, 0x43, 0x18, // 31: mov eax, [ebx+0x18]
    0x8b, 0x30, // 34: mov esi, [eax]          ; mod_start
    0xe8, 0x14, 0x00, 0x00, 0x00, // 36: call puts
    0x66, 0xba, 0xf4, 0x00, // 41: mov dx, 0xf4
    0xb8, 0x10, 0x00, 0x00, 0x00, // 45: mov eax, 0x10
    0xef, // 50: out dx, eax
    0x66, 0xba, 0xf4, 0x00, // 51: bad: mov dx, 0xf4
    0xb8, 0x03, 0x00, 0x00, 0x00, // 55: mov eax, 3
    0xef, // 60: out dx, eax
    0x66, 0xba, 0xf8, 0x03, // 61: puts: mov dx, 0x3f8
    0xac, // 65: lodsb
    0x84, 0xc0, // 66: test al, al
    0x74, 0x03, // 68: jz 73
    0xee, // 70: out dx, al
    0xeb, 0xf8, // 71: jmp 65
    0xb0, 0x0a, // 73: mov al, 0x0a
    0xee, // 75: out dx, al
    0xc3, // 76: ret
];

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bare-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn nestvisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nestvisor"))
        .args(args)
        .output()
        .unwrap()
}

fn run_image(name: &str, image: &[u8], extra: &[&str]) -> Output {
    let path = write_temp(name, image);
    let mut args = vec![
        "run",
        "--bare",
        path.to_str().unwrap(),
        "--max-insns",
        "100000",
    ];
    args.extend_from_slice(extra);
    let out = nestvisor(&args);
    std::fs::remove_file(&path).unwrap();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn aout_kernel_prints_and_exits_through_the_debug_port() {
    let o = run_image("aout-hi", &aout_kernel(HI_THEN_EXIT), &[]);
    assert_eq!(o.stdout, b"hi\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some((0x10 << 1) | 1));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn elf32_kernel_prints_and_exits_through_the_debug_port() {
    let o = run_image("elf-hi", &elf32_kernel(HI_THEN_EXIT), &[]);
    assert_eq!(o.stdout, b"hi\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0x21));
}

#[test]
fn boot_information_reaches_the_kernel() {
    let module = write_temp("module", b"MODULE-DATA\0");
    let image = write_temp("bootinfo", &aout_kernel(PRINT_BOOT_INFO));
    let module_arg = format!("{} modarg", module.display());
    let o = nestvisor(&[
        "run",
        "--bare",
        image.to_str().unwrap(),
        "--append",
        "console=ttyS0",
        "--module",
        &module_arg,
        "--mem",
        "32",
        "--max-insns",
        "100000",
    ]);
    let expected = format!(
        "{} console=ttyS0\n{module_arg}\nMODULE-DATA\n",
        image.display()
    );
    std::fs::remove_file(&module).unwrap();
    std::fs::remove_file(&image).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        expected,
        "stderr: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0x21));
}

#[test]
fn triple_fault_has_its_own_status() {
    // No IDT: int3 -> #GP -> #DF -> shutdown.
    let o = run_image("triple", &aout_kernel(&[0xcc]), &[]); // int3
    assert_eq!(o.status.code(), Some(6), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("triple fault"), "{}", stderr(&o));
}

#[test]
fn instruction_limit_has_its_own_status() {
    let o = run_image("spin", &aout_kernel(&[0xeb, 0xfe]), &[]); // jmp $
    assert_eq!(o.status.code(), Some(8), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("instruction limit"), "{}", stderr(&o));
}

#[test]
fn hlt_with_interrupts_disabled_has_its_own_status() {
    let o = run_image("cli-hlt", &aout_kernel(&[0xfa, 0xf4]), &[]); // cli; hlt
    assert_eq!(o.status.code(), Some(10), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("halted with interrupts disabled"),
        "{}",
        stderr(&o)
    );
    // STI; HLT with no timer armed can never wake either.
    let o = run_image("sti-hlt", &aout_kernel(&[0xfb, 0xf4]), &[]);
    assert_eq!(o.status.code(), Some(10), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("no interrupt"), "{}", stderr(&o));
}

#[test]
fn unimplemented_instruction_stops_with_address_bytes_and_mnemonic() {
    // fsin (x87): valid on every x86-64 processor, not implemented by the model.
    let o = run_image("fsin", &aout_kernel(&[0xd9, 0xfe]), &[]);
    assert_eq!(o.status.code(), Some(12), "stderr: {}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("0x100020"), "{e}");
    assert!(e.to_lowercase().contains("fsin"), "{e}");
    assert!(e.contains("d9") && e.contains("fe"), "{e}");
}

#[test]
fn malformed_images_are_rejected_with_a_reason() {
    let o = run_image("garbage", &[0x55; 300], &[]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("no multiboot header"), "{}", stderr(&o));

    let mut bad = aout_kernel(HI_THEN_EXIT);
    bad[8] ^= 0xff;
    let o = run_image("checksum", &bad, &[]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));

    let o = run_image("ram", &aout_kernel(HI_THEN_EXIT), &["--mem", "1"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("RAM size"), "{}", stderr(&o));

    let o = nestvisor(&["run", "--bare", "/nonexistent/kernel"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn usage_errors_and_help() {
    let o = nestvisor(&["run", "kernel"]);
    assert_eq!(o.status.code(), Some(2), "--bare is required");
    let o = nestvisor(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("triple fault") && help.contains("(v << 1) | 1"),
        "{help}"
    );
}

/// A kernel laid out by address: the a.out-kludge header at 1 MiB, then pieces of code and
/// data placed at fixed addresses (all below 1 MiB + 4 KiB).
struct Layout(Vec<u8>);

impl Layout {
    /// Entry point.
    const ENTRY: u32 = LOAD + 0x20;
    /// GDTR image (limit, base).
    const GDTR: u32 = LOAD + 0x1f0;
    /// IDTR image.
    const IDTR: u32 = LOAD + 0x1f8;
    /// A counter the interrupt handler increments.
    const COUNTER: u32 = LOAD + 0x1e0;
    /// Flat GDT: null, code 0x08, data 0x10.
    const GDT: u32 = LOAD + 0x200;
    /// IDT.
    const IDT: u32 = LOAD + 0x400;
    /// Interrupt handler.
    const HANDLER: u32 = LOAD + 0x100;

    /// Header, GDT and an IDT whose entry `vector` is an interrupt gate to [`Self::HANDLER`].
    fn new(vector: u8) -> Self {
        let mut l = Layout(aout_kernel(&[]));
        l.0.resize(0xc00, 0);
        l.put(Self::GDT, &[0; 8]);
        l.put(Self::GDT + 8, &0x00cf_9a00_0000_ffffu64.to_le_bytes());
        l.put(Self::GDT + 16, &0x00cf_9200_0000_ffffu64.to_le_bytes());
        l.put(Self::GDTR, &0x17u16.to_le_bytes());
        l.put(Self::GDTR + 2, &Self::GDT.to_le_bytes());
        let limit = u16::from(vector) * 8 + 7;
        l.put(Self::IDTR, &limit.to_le_bytes());
        l.put(Self::IDTR + 2, &Self::IDT.to_le_bytes());
        let h = Self::HANDLER;
        let gate =
            u64::from((0x08 << 16) | (h & 0xffff)) | (u64::from((h & 0xffff_0000) | 0x8e00) << 32);
        l.put(Self::IDT + u32::from(vector) * 8, &gate.to_le_bytes());
        l
    }

    fn put(&mut self, addr: u32, bytes: &[u8]) {
        let at = (addr - LOAD) as usize;
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

fn le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// `lgdt [GDTR]; lidt [IDTR]; mov esp, 0x90000`.
fn prologue() -> Vec<u8> {
    let mut c = vec![0x0f, 0x01, 0x15]; // lgdt [disp32]
    c.extend_from_slice(&le(Layout::GDTR));
    c.extend_from_slice(&[0x0f, 0x01, 0x1d]); // lidt [disp32]
    c.extend_from_slice(&le(Layout::IDTR));
    c.extend_from_slice(&[0xbc, 0x00, 0x00, 0x09, 0x00]); // mov esp, 0x90000
    c
}

/// `mov dword [addr], value`.
fn store(addr: u32, value: u32) -> Vec<u8> {
    let mut c = vec![0xc7, 0x05];
    c.extend_from_slice(&le(addr));
    c.extend_from_slice(&le(value));
    c
}

/// `mov al, value; out port, al`.
fn outb(port: u8, value: u8) -> [u8; 4] {
    [0xb0, value, 0xe6, port]
}

/// `loop: ARM; sti; hlt; cli; cmp dword [COUNTER], n; jb loop`, then exit with the counter.
/// Interrupts are enabled only across the HLT (the STI shadow covers it), so each iteration
/// takes exactly one interrupt however fast the timer runs.
fn wait_for_interrupts_then_exit(arm: &[u8], n: u8) -> Vec<u8> {
    let mut c = arm.to_vec();
    c.extend_from_slice(&[0xfb, 0xf4, 0xfa, 0x83, 0x3d]); // sti; hlt; cli; cmp dword [disp32], imm8
    c.extend_from_slice(&le(Layout::COUNTER));
    let back = -(i8::try_from(c.len() + 3).unwrap());
    c.extend_from_slice(&[n, 0x72, back as u8]); // n; jb loop
    c.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00, 0xa1]); // mov dx, 0xf4; mov eax, [disp32]
    c.extend_from_slice(&le(Layout::COUNTER));
    c.push(0xef); // out dx, eax
    c
}

/// A kernel that masks the 8259s, arms the local APIC timer (one-shot, vector 0x40, divide
/// by 1, 50000 ticks) three times and prints a T from each interrupt.
fn apic_timer_kernel() -> Vec<u8> {
    let mut l = Layout::new(0x40);
    let mut code = prologue();
    // Mask the 8259s: the firmware may have left its timer running (SeaBIOS does, under QEMU).
    code.extend(outb(0x21, 0xff));
    code.extend(outb(0xa1, 0xff));
    code.extend(store(0xfee0_00f0, 0x1ff)); // SVR: software enable, spurious vector 0xff
    code.extend(store(0xfee0_03e0, 0xb)); // divide by 1
    code.extend(store(0xfee0_0320, 0x40)); // LVT timer: one-shot, vector 0x40
    code.extend(wait_for_interrupts_then_exit(
        &store(0xfee0_0380, 50_000),
        3,
    ));
    l.put(Layout::ENTRY, &code);
    l.put(Layout::HANDLER, &handler(b'T', &store(0xfee0_00b0, 0)));
    l.0
}

/// Prints `ch`, increments the counter, signals EOI with `eoi`, IRETD.
fn handler(ch: u8, eoi: &[u8]) -> Vec<u8> {
    let mut c = vec![0x66, 0xba, 0xf8, 0x03, 0xb0, ch, 0xee]; // mov dx, 0x3f8; mov al, ch; out dx, al
    c.extend_from_slice(&[0xff, 0x05]); // inc dword [disp32]
    c.extend_from_slice(&le(Layout::COUNTER));
    c.extend_from_slice(eoi);
    c.push(0xcf); // iretd
    c
}

/// A kernel that arms PIT channel 0 in mode 0 (interrupt on terminal count, one interrupt per
/// arming) through the remapped 8259 three times and prints a P from each interrupt.
fn pit_one_shot_kernel() -> Vec<u8> {
    let mut l = Layout::new(0x20);
    let mut code = prologue();
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0xfe),
    ] {
        code.extend(outb(port, value));
    }
    let mut arm = Vec::new();
    for (port, value) in [(0x43, 0x30), (0x40, 0x00), (0x40, 0x10)] {
        arm.extend(outb(port, value)); // mode 0, LSB/MSB, count 0x1000
    }
    code.extend(wait_for_interrupts_then_exit(&arm, 3));
    l.put(Layout::ENTRY, &code);
    l.put(Layout::HANDLER, &handler(b'P', &outb(0x20, 0x20)));
    l.0
}

/// Prints fw_cfg's signature and CPU count, then exits with 0x10.
fn fw_cfg_kernel() -> Vec<u8> {
    let mut c = Vec::new();
    let select = |c: &mut Vec<u8>, key: u8| {
        c.extend_from_slice(&[0x66, 0xba, 0x10, 0x05]); // mov dx, 0x510
        c.extend_from_slice(&[0x66, 0xb8, key, 0x00]); // mov ax, key
        c.extend_from_slice(&[0x66, 0xef]); // out dx, ax
    };
    let copy_byte = |c: &mut Vec<u8>, add: u8| {
        c.extend_from_slice(&[0x66, 0xba, 0x11, 0x05, 0xec]); // mov dx, 0x511; in al, dx
        c.extend_from_slice(&[0x04, add]); // add al, add
        c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xee]); // mov dx, 0x3f8; out dx, al
    };
    select(&mut c, 0x00);
    for _ in 0..4 {
        copy_byte(&mut c, 0);
    }
    select(&mut c, 0x05);
    copy_byte(&mut c, b'0');
    c.extend_from_slice(&[0xb0, b'\n', 0xee]); // mov al, 0x0a; out dx, al
    c.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00, 0xb8, 0x10, 0, 0, 0, 0xef]); // exit 0x10
    aout_kernel(&c)
}

#[test]
fn pit_one_shot_and_fw_cfg() {
    let o = run_image("pit-one-shot", &pit_one_shot_kernel(), &[]);
    assert_eq!(o.stdout, b"PPP", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some((3 << 1) | 1));
    let o = run_image("fw-cfg", &fw_cfg_kernel(), &[]);
    assert_eq!(o.stdout, b"QEMU1\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0x21));
}

#[test]
fn apic_timer_wakes_a_halted_cpu() {
    let o = run_image("apic-timer", &apic_timer_kernel(), &[]);
    assert_eq!(o.stdout, b"TTT", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some((3 << 1) | 1));
}

#[test]
fn pit_through_the_8259_wakes_a_halted_cpu() {
    let mut l = Layout::new(0x20);
    let mut code = prologue();
    // Remap the master 8259 to 0x20, unmask IRQ 0 only.
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0xfe),
    ] {
        code.extend(outb(port, value));
    }
    // PIT channel 0, mode 2, count 1193 (about 1 ms of virtual time, far beyond the budget
    // of instructions: only idle skipping gets there).
    for (port, value) in [(0x43, 0x34), (0x40, 0xa9), (0x40, 0x04)] {
        code.extend(outb(port, value));
    }
    code.extend(wait_for_interrupts_then_exit(&[], 4));
    l.put(Layout::ENTRY, &code);
    l.put(Layout::HANDLER, &handler(b'P', &outb(0x20, 0x20)));
    let o = run_image("pit-pic", &l.0, &[]);
    assert_eq!(o.stdout, b"PPPP", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some((4 << 1) | 1));
}

/// Runs `image` under QEMU (`nestvisor::qemu`: TCG, the isa-debug-exit device at 0xF4 as on the
/// board) with command line `append`, 32 MiB of RAM and `extra` arguments.
fn qemu(image: &std::path::Path, append: &str, extra: &[&str]) -> Output {
    assert!(
        nestvisor::qemu::available(),
        "{} not found: install qemu-system-x86 (scripts/setup does) to run this test",
        nestvisor::qemu::BINARY
    );
    nestvisor::qemu::command(image, append, 32)
        .args(extra)
        .output()
        .unwrap()
}

/// The same image gives the same serial output and the same exit status under QEMU and under
/// `nestvisor run --bare` (issue 3, item 6).
#[test]
fn kernels_behave_the_same_under_qemu() {
    let module = write_temp("parity-module", b"MODULE-DATA\0");
    let module_arg = format!("{} modarg", module.display());
    let kernels: [(&str, Vec<u8>); 6] = [
        ("parity-aout", aout_kernel(HI_THEN_EXIT)),
        ("parity-elf", elf32_kernel(HI_THEN_EXIT)),
        ("parity-bootinfo", aout_kernel(PRINT_BOOT_INFO)),
        ("parity-apic", apic_timer_kernel()),
        ("parity-pit", pit_one_shot_kernel()),
        ("parity-fw-cfg", fw_cfg_kernel()),
    ];
    for (name, bytes) in kernels {
        let image = write_temp(name, &bytes);
        let q = qemu(&image, "console=ttyS0", &["-initrd", &module_arg]);
        let n = nestvisor(&[
            "run",
            "--bare",
            image.to_str().unwrap(),
            "--append",
            "console=ttyS0",
            "--module",
            &module_arg,
            "--mem",
            "32",
            "--max-insns",
            "1000000",
        ]);
        std::fs::remove_file(&image).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&n.stdout),
            String::from_utf8_lossy(&q.stdout),
            "{name}: nestvisor stderr: {}; qemu stderr: {}",
            stderr(&n),
            stderr(&q)
        );
        assert_eq!(n.status.code(), q.status.code(), "{name}");
    }
    std::fs::remove_file(&module).unwrap();
}
