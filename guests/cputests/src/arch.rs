//! The library's assembly: the exception entry stubs and the probe that runs a piece of code
//! and comes back whether or not it faulted.
//!
//! - Entry (SDM Vol. 3A §7.14 "Exception and Interrupt Handling in 64-bit Mode"): the processor
//!   pushes SS, RSP, RFLAGS, CS, RIP and, for vectors 8, 10–14, 17, 21, 29 and 30, an error code
//!   (§7.15); each stub pushes a zero where the processor pushes none, then its vector; the
//!   common path saves the general registers into a [`TrapFrame`], calls [`crate::trap`] and leaves
//!   with IRETQ (§7.14.4: in 64-bit mode IRETQ always pops SS:RSP).
//! - Probe: a `setjmp` for exceptions. It saves the callee-saved registers and RSP, calls the
//!   code, and returns 0. When an exception interrupts the code, the trap handler rewrites the
//!   frame so that IRETQ lands on `cputests_probe_resume` at ring 0 with the saved RSP, which
//!   returns 1 from the same call.

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// Vector of the software-interrupt gate that ring-3 code may call (`INT 0x80`).
pub const SYSCALL_GATE: u8 = 0x80;

pub use rt::frame::TrapFrame;

/// RSP of the active probe, 0 when no probe is active. Written by the probe, read and cleared
/// by the trap handler.
pub static PROBE_RSP: AtomicU64 = AtomicU64::new(0);

/// Distance between the per-vector entry stubs.
const STUB_SIZE: u64 = 16;

global_asm!(
    r#"
    .section .text.cputests_traps, "ax"
    .p2align 4
    .global cputests_trap_stubs
cputests_trap_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .p2align 4
    .if (\v == 8) || ((\v >= 10) && (\v <= 14)) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    push \v
    .else
    push 0
    push \v
    .endif
    jmp cputests_trap_common
    .endr
    .p2align 4
    .global cputests_gate_stub
cputests_gate_stub:
    push 0
    push {gate}
    jmp cputests_trap_common

cputests_trap_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    mov rbp, rsp
    and rsp, -16
    call {trap}
    mov rsp, rbp
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

    // u64 cputests_probe(fn(u64), u64 arg): 0 if fn returned, 1 if an exception interrupted it.
    .global cputests_probe
cputests_probe:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov [rip + {probe_rsp}], rsp
    mov rax, rdi
    mov rdi, rsi
    call rax
    xor eax, eax
    jmp 2f
    .global cputests_probe_resume
cputests_probe_resume:
    mov eax, 1
2:
    mov qword ptr [rip + {probe_rsp}], 0
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    // cputests_enter_user(&UserContext): IRETQ to ring 3 (SDM Vol. 3A §7.14.4) with RDI and
    // RSI from the context and RFLAGS = 2 (interrupts off). Does not return: the ring-3 code
    // leaves through an exception or the INT 0x80 gate, which the active probe catches.
    .global cputests_enter_user
cputests_enter_user:
    mov rax, rdi
    push {user_ds}
    push qword ptr [rax + 8]
    push 2
    push {user_cs}
    push qword ptr [rax]
    mov rdi, [rax + 16]
    mov rsi, [rax + 24]
    iretq

    .section .text
"#,
    user_ds = const crate::desc::USER_DS,
    user_cs = const crate::desc::USER_CS,
    gate = const SYSCALL_GATE,
    trap = sym crate::trap::dispatch,
    probe_rsp = sym PROBE_RSP,
);

unsafe extern "C" {
    static cputests_trap_stubs: u8;
    static cputests_gate_stub: u8;
    static cputests_probe_resume: u8;
    fn cputests_probe(code: unsafe extern "C" fn(u64), arg: u64) -> u64;
    fn cputests_enter_user(context: u64);
}

/// Where ring-3 code starts and what it gets: RIP, RSP, and RDI and RSI as arguments.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UserContext {
    pub rip: u64,
    pub rsp: u64,
    pub rdi: u64,
    pub rsi: u64,
}

/// Probe body that enters ring 3 as the [`UserContext`] at `context` says.
///
/// # Safety
/// `context` must point at a live `UserContext` whose RIP and RSP are mapped user pages; run it
/// only inside a probe, which is the way back.
pub unsafe extern "C" fn enter_user(context: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { cputests_enter_user(context) }
}

/// Entry stub of exception `vector` (0–31).
pub fn trap_stub(vector: u8) -> u64 {
    &raw const cputests_trap_stubs as u64 + u64::from(vector) * STUB_SIZE
}

/// Entry stub of the [`SYSCALL_GATE`] vector.
pub fn gate_stub() -> u64 {
    &raw const cputests_gate_stub as u64
}

/// Where a trap during a probe resumes.
pub fn probe_resume() -> u64 {
    &raw const cputests_probe_resume as u64
}

/// Runs `code(arg)` at ring 0; returns `true` when an exception interrupted it (see
/// [`crate::trap::probe`]).
///
/// # Safety
/// `code` must follow the C calling convention and be sound to run with `arg`.
pub unsafe fn probe(code: unsafe extern "C" fn(u64), arg: u64) -> bool {
    // SAFETY: the caller vouches for `code`; the probe preserves the callee-saved registers.
    unsafe { cputests_probe(code, arg) != 0 }
}
