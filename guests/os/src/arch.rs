//! The kernel's assembly: exception and interrupt entry stubs, the SYSCALL entry and SYSRET
//! exit, the return-to-user path shared by interrupts and new processes, and the kernel-stack
//! switch.
//!
//! - Interrupt and exception entry (SDM Vol. 3A §6.14 "Exception and Interrupt Handling in
//!   64-bit Mode"): the processor pushes SS, RSP, RFLAGS, CS, RIP and, for vectors 8, 10–14, 17,
//!   21, 29 and 30, an error code (§6.15); each stub pushes a zero error code where the processor
//!   does not, then its vector, and the common path saves the general registers into a
//!   [`TrapFrame`] and leaves with IRETQ.
//! - SYSCALL / SYSRET (SDM Vol. 2B, SYSCALL and SYSRET; Vol. 3A §5.8.8): SYSCALL leaves the user
//!   RIP in RCX and RFLAGS in R11 and does not switch stacks, so the entry saves the user RSP in
//!   a scratch slot (one CPU, interrupts masked by IA32_FMASK) and builds the same [`TrapFrame`]
//!   on the process's kernel stack.

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// Vector pushed by the SYSCALL entry in place of an interrupt vector.
pub const SYSCALL_VECTOR: u64 = 0x100;

pub use rt::frame::TrapFrame;

/// The kernel stack top the SYSCALL entry switches to: the current process's.
pub static SYSCALL_KERNEL_RSP: AtomicU64 = AtomicU64::new(0);
/// Scratch slot for the user RSP during SYSCALL entry.
static SYSCALL_USER_RSP: AtomicU64 = AtomicU64::new(0);

/// Distance between the per-vector entry stubs.
const STUB_SIZE: u64 = 16;

global_asm!(
    r#"
    .section .text.traps, "ax"
    .p2align 4
    .global os_trap_stubs
os_trap_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32
    .p2align 4
    .if (\v == 8) || ((\v >= 10) && (\v <= 14)) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    push \v
    .else
    push 0
    push \v
    .endif
    jmp os_trap_common
    .endr
    .p2align 4
os_trap_spurious:
    push 0
    push 0xFF
    jmp os_trap_common

os_trap_common:
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
    call {trap}
    .global os_trap_return
os_trap_return:
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

    .global os_syscall_entry
os_syscall_entry:
    mov [rip + {user_rsp}], rsp
    mov rsp, [rip + {kernel_rsp}]
    push {user_ss}
    push [rip + {user_rsp}]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {syscall_vector}
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
    call {syscall}
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
    pop rcx
    add rsp, 8
    pop r11
    pop rsp
    sysretq

    .global os_switch_context
os_switch_context:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .section .text
"#,
    trap = sym crate::trap::trap_dispatch,
    syscall = sym crate::syscall::syscall_dispatch,
    user_rsp = sym SYSCALL_USER_RSP,
    kernel_rsp = sym SYSCALL_KERNEL_RSP,
    user_ss = const crate::gdt::USER_DS as u64,
    user_cs = const crate::gdt::USER_CS as u64,
    syscall_vector = const SYSCALL_VECTOR,
);

unsafe extern "C" {
    static os_trap_stubs: u8;
    static os_trap_spurious: u8;
    static os_trap_return: u8;
    static os_syscall_entry: u8;
    fn os_switch_context(save: *mut u64, next: u64);
}

/// Address of the entry stub for exception or interrupt `vector` (0..=32).
pub fn trap_stub(vector: u8) -> u64 {
    assert!(vector <= 32, "no entry stub for vector {vector}");
    &raw const os_trap_stubs as u64 + STUB_SIZE * u64::from(vector)
}

/// Address of the spurious-interrupt stub (vector 0xFF).
pub fn spurious_stub() -> u64 {
    &raw const os_trap_spurious as u64
}

/// Address of the path that pops a [`TrapFrame`] and IRETQs: where a new process starts.
pub fn trap_return() -> u64 {
    &raw const os_trap_return as u64
}

/// Address of the SYSCALL entry, for IA32_LSTAR.
pub fn syscall_entry() -> u64 {
    &raw const os_syscall_entry as u64
}

/// Saves the callee-saved registers and RSP of the running kernel context into `*save`, and
/// resumes the context whose saved RSP is `next`.
///
/// # Safety
/// `next` must be a stack prepared by a previous switch or by [`initial_stack_frame`], whose
/// memory stays valid while it runs; `save` must be valid for writes.
pub unsafe fn switch_context(save: *mut u64, next: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { os_switch_context(save, next) }
}

/// The words `os_switch_context` pops for a context that has never run: six callee-saved
/// registers, then a return address into [`trap_return`].
pub fn initial_stack_frame() -> [u64; 7] {
    [0, 0, 0, 0, 0, 0, trap_return()]
}
