//! The guests of vmx-ept: reads, writes and calls through a linear address, and a sweep that
//! reads eight pages in three rounds with a VMCALL between rounds, where the host changes the
//! translations.

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// What the guests store.
pub static OUT: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Pages the sweep reads per round.
pub const SWEEP_PAGES: usize = 8;
/// Rounds of the sweep.
pub const SWEEP_ROUNDS: usize = 3;

/// What `g_sweep` reads: round r, page i at `r * SWEEP_PAGES + i`.
pub static SWEEP: [AtomicU64; SWEEP_PAGES * SWEEP_ROUNDS] =
    [const { AtomicU64::new(0) }; SWEEP_PAGES * SWEEP_ROUNDS];

global_asm!(
    r#"
    .section .text.vmx_ept_guests, "ax"

    // OUT[0] = [RDI].
    .global g_read
g_read:
    mov rax, [rdi]
    mov [rip + {out}], rax
    ret

    // [RDI] = 0x5757.
    .global g_write
g_write:
    mov qword ptr [rdi], 0x5757
    ret

    // CALL RDI.
    .global g_call
g_call:
    call rdi
    ret

    // Three rounds of reading the first quadword of the pages at RDI + 4096 * i (i < 8) into
    // SWEEP, with VMCALL (RAX = 1, 2) after the first two rounds.
    .global g_sweep
g_sweep:
    lea rsi, [rip + {sweep}]
    xor r8d, r8d
2:
    xor ecx, ecx
3:
    mov rax, rcx
    shl rax, 12
    mov rax, [rdi + rax]
    mov rdx, r8
    shl rdx, 3
    add rdx, rcx
    mov [rsi + rdx * 8], rax
    inc ecx
    cmp ecx, {pages}
    jb 3b
    inc r8d
    cmp r8d, {rounds}
    jae 4f
    mov eax, r8d
    vmcall
    jmp 2b
4:
    ret

    .section .text
"#,
    out = sym OUT,
    sweep = sym SWEEP,
    pages = const SWEEP_PAGES,
    rounds = const SWEEP_ROUNDS,
);

unsafe extern "C" {
    pub fn g_read(arg: u64);
    pub fn g_write(arg: u64);
    pub fn g_call(arg: u64);
    pub fn g_sweep(arg: u64);
}
