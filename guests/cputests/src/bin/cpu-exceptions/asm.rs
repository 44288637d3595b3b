//! The code cpu-exceptions makes fault: each snippet is a C-ABI function run inside a probe,
//! with a global label on the instruction that is expected to raise the exception, so the
//! program can compare the saved RIP with it. The ring-3 snippets live in one page-aligned
//! page (`user_page_start` … `user_page_end`) that the program maps at a user address. The
//! only file of this program with inline assembly.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.exc_tests, "ax"

    .global exc_de, exc_de_at
exc_de:
    xor ecx, ecx
    mov eax, 1
    xor edx, edx
exc_de_at:
    div ecx
    ret

    .global exc_ud, exc_ud_at
exc_ud:
exc_ud_at:
    ud2
    ret

    // PUSH ES (opcode 06) is invalid in 64-bit mode.
    .global exc_push_es, exc_push_es_at
exc_push_es:
exc_push_es_at:
    .byte 0x06
    ret

    .global exc_bp, exc_bp_at
exc_bp:
exc_bp_at:
    int3
    ret

    .global exc_int80, exc_int80_at
exc_int80:
exc_int80_at:
    int 0x80
    ret

    // rdi = address
    .global exc_read, exc_read_at
exc_read:
exc_read_at:
    mov rax, [rdi]
    ret

    .global exc_write, exc_write_at
exc_write:
exc_write_at:
    mov qword ptr [rdi], rdi
    ret

    .global exc_call, exc_call_at
exc_call:
exc_call_at:
    call rdi
    ret

    // rdi = selector for DS
    .global exc_load_ds, exc_load_ds_at
exc_load_ds:
    mov eax, edi
exc_load_ds_at:
    mov ds, ax
    mov eax, 0x10
    mov ds, ax
    ret

    // rdi = an unmapped, 16-byte aligned address: the stack and the operand. The probe
    // restores RSP.
    .global exc_bad_stack, exc_bad_stack_at
exc_bad_stack:
    mov rsp, rdi
exc_bad_stack_at:
    mov rax, [rdi]
    ret

    .section .text.exc_user, "ax"
    .p2align 12
    .global user_page_start
user_page_start:

    // ring 3: rdi = address to read
    .global user_read, user_read_at
user_read:
user_read_at:
    mov rax, [rdi]
    int 0x80

    // ring 3: rdi = address to write
    .global user_write, user_write_at
user_write:
user_write_at:
    mov qword ptr [rdi], rdi
    int 0x80

    // ring 3: a privileged instruction
    .global user_cli, user_cli_at
user_cli:
user_cli_at:
    cli
    int 0x80

    // ring 3: a privileged MSR read (IA32_TIME_STAMP_COUNTER)
    .global user_rdmsr, user_rdmsr_at
user_rdmsr:
    mov ecx, 0x10
user_rdmsr_at:
    rdmsr
    int 0x80

    .p2align 12
    .global user_page_end
user_page_end:

    .section .text
"#
);

unsafe extern "C" {
    pub fn exc_de(arg: u64);
    pub static exc_de_at: u8;
    pub fn exc_ud(arg: u64);
    pub static exc_ud_at: u8;
    pub fn exc_push_es(arg: u64);
    pub static exc_push_es_at: u8;
    pub fn exc_bp(arg: u64);
    pub static exc_bp_at: u8;
    pub fn exc_int80(arg: u64);
    pub static exc_int80_at: u8;
    pub fn exc_read(address: u64);
    pub static exc_read_at: u8;
    pub fn exc_write(address: u64);
    pub static exc_write_at: u8;
    pub fn exc_call(address: u64);
    pub fn exc_load_ds(selector: u64);
    pub static exc_load_ds_at: u8;
    pub fn exc_bad_stack(stack: u64);
    pub static user_page_start: u8;
    pub static user_page_end: u8;
    pub static user_read: u8;
    pub static user_read_at: u8;
    pub static user_write: u8;
    pub static user_write_at: u8;
    pub static user_cli: u8;
    pub static user_cli_at: u8;
    pub static user_rdmsr: u8;
    pub static user_rdmsr_at: u8;
}
