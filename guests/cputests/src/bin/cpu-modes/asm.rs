//! The code cpu-modes runs: the SYSCALL and SYSENTER entries (which record what they saw and
//! return with SYSRET and SYSEXIT), far returns, SWAPGS, RDTSC and RDTSCP, and the ring-3 snippets in one page-aligned
//! page (`user_page_start` … `user_page_end`) that the program maps at a user address. Ring-3
//! snippets get RDI = the user data page and store what they observe there; they leave through
//! `INT 0x80`. The only file of this program with inline assembly.

use core::arch::{asm, global_asm};

/// What the SYSCALL entry saw on its last call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SyscallRecord {
    /// RCX and R11 as SYSCALL left them: the user RIP and RFLAGS.
    pub rcx: u64,
    pub r11: u64,
    /// CS, SS and RFLAGS inside the entry.
    pub cs: u64,
    pub ss: u64,
    pub rflags: u64,
    /// Calls so far.
    pub count: u64,
}

/// Written by the SYSCALL entry only.
#[unsafe(no_mangle)]
pub static mut SYSCALL_RECORD: SyscallRecord = SyscallRecord {
    rcx: 0,
    r11: 0,
    cs: 0,
    ss: 0,
    rflags: 0,
    count: 0,
};

/// What the SYSENTER entry saw on its last call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SysenterRecord {
    pub cs: u64,
    pub ss: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub count: u64,
}

/// Written by the SYSENTER entry only.
#[unsafe(no_mangle)]
pub static mut SYSENTER_RECORD: SysenterRecord = SysenterRecord {
    cs: 0,
    ss: 0,
    rsp: 0,
    rflags: 0,
    count: 0,
};

global_asm!(
    r#"
    .section .text.modes, "ax"

    // IA32_LSTAR target. RSP is still the user's (SYSCALL does not switch stacks).
    .global modes_syscall_entry
modes_syscall_entry:
    mov [rip + SYSCALL_RECORD + 0], rcx
    mov [rip + SYSCALL_RECORD + 8], r11
    mov eax, cs
    mov [rip + SYSCALL_RECORD + 16], rax
    mov eax, ss
    mov [rip + SYSCALL_RECORD + 24], rax
    pushfq
    pop rax
    mov [rip + SYSCALL_RECORD + 32], rax
    inc qword ptr [rip + SYSCALL_RECORD + 40]
    sysretq

    // IA32_SYSENTER_EIP target: RSP = IA32_SYSENTER_ESP. Returns with 64-bit SYSEXIT to
    // RDX (RIP) and RCX (RSP), which ring 3 set before SYSENTER.
    .global modes_sysenter_entry
modes_sysenter_entry:
    mov eax, cs
    mov [rip + SYSENTER_RECORD + 0], rax
    mov eax, ss
    mov [rip + SYSENTER_RECORD + 8], rax
    mov [rip + SYSENTER_RECORD + 16], rsp
    pushfq
    pop rax
    mov [rip + SYSENTER_RECORD + 24], rax
    inc qword ptr [rip + SYSENTER_RECORD + 32]
    sysexitq

    // u64 modes_far_return(): RETF 16 to ring 0 dropping two parameters; returns
    // (CS << 8) | (RSP back where it was).
    .global modes_far_return
modes_far_return:
    mov rdx, rsp
    push 0x1111
    push 0x2222
    push {kernel_cs}
    lea rax, [rip + 2f]
    push rax
    retfq 16
2:
    xor eax, eax
    cmp rdx, rsp
    sete al
    mov ecx, cs
    shl ecx, 8
    or eax, ecx
    ret

    // modes_far_return_to_user(&UserContext): RETF to ring 3, popping SS:RSP too.
    .global modes_far_return_to_user
modes_far_return_to_user:
    mov rax, rdi
    push {user_ds}
    push qword ptr [rax + 8]
    push {user_cs}
    push qword ptr [rax]
    mov rdi, [rax + 16]
    mov rsi, [rax + 24]
    retfq

    // u64 modes_swapgs_read(): GS:[0] with the other GS base, then swaps back.
    .global modes_swapgs_read
modes_swapgs_read:
    swapgs
    mov rax, gs:[0]
    swapgs
    ret

    .global modes_gs_read
modes_gs_read:
    mov rax, gs:[0]
    ret

    // modes_load_data_segments(selector): DS and ES.
    .global modes_load_data_segments
modes_load_data_segments:
    mov ds, edi
    mov es, edi
    ret

    .section .text.modes_user, "ax"
    .p2align 12
    .global user_page_start
user_page_start:

    // Stores CS, SS, DS, ES and RFLAGS at [rdi].
    .global user_identify
user_identify:
    mov eax, cs
    mov [rdi], rax
    mov eax, ss
    mov [rdi + 8], rax
    mov eax, ds
    mov [rdi + 16], rax
    mov eax, es
    mov [rdi + 24], rax
    pushfq
    pop rax
    mov [rdi + 32], rax
    int 0x80

    // RSI round trips through SYSCALL/SYSRET with DF set; after the last one stores RFLAGS,
    // CS and SS as SYSRET left them at [rdi].
    .global user_syscalls, user_syscall_next
user_syscalls:
    mov r12, rsi
3:
    std
    syscall
user_syscall_next:
    pushfq
    pop rax
    cld
    mov [rdi], rax
    mov eax, cs
    mov [rdi + 8], rax
    mov eax, ss
    mov [rdi + 16], rax
    dec r12
    jnz 3b
    int 0x80

    // SYSENTER and back by SYSEXIT; then stores CS, SS, RSP and RFLAGS at [rdi].
    .global user_sysenter, user_sysenter_back
user_sysenter:
    lea rdx, [rip + user_sysenter_back]
    mov rcx, rsp
    sysenter
user_sysenter_back:
    mov eax, cs
    mov [rdi], rax
    mov eax, ss
    mov [rdi + 8], rax
    mov [rdi + 16], rsp
    pushfq
    pop rax
    mov [rdi + 24], rax
    int 0x80

    // RDTSC at ring 3 (CR4.TSD decides whether it faults).
    .global user_rdtsc, user_rdtsc_at
user_rdtsc:
user_rdtsc_at:
    rdtsc
    int 0x80

    .p2align 12
    .global user_page_end
user_page_end:

    .section .text
"#,
    kernel_cs = const cputests::desc::KERNEL_CS,
    user_cs = const cputests::desc::USER_CS,
    user_ds = const cputests::desc::USER_DS,
);

unsafe extern "C" {
    pub fn modes_syscall_entry();
    pub fn modes_sysenter_entry();
    pub fn modes_far_return() -> u64;
    pub fn modes_far_return_to_user(context: u64);
    pub fn modes_swapgs_read() -> u64;
    pub fn modes_gs_read() -> u64;
    pub fn modes_load_data_segments(selector: u64);
    pub static user_page_start: u8;
    pub static user_page_end: u8;
    pub static user_identify: u8;
    pub static user_syscalls: u8;
    pub static user_syscall_next: u8;
    pub static user_sysenter: u8;
    pub static user_rdtsc: u8;
    pub static user_rdtsc_at: u8;
}

/// RDTSC (SDM Vol. 2B "RDTSC").
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the time-stamp counter only.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// RDTSCP: the TSC and IA32_TSC_AUX (SDM Vol. 2B "RDTSCP").
pub fn rdtscp() -> (u64, u32) {
    let (lo, hi, aux): (u32, u32, u32);
    // SAFETY: reads the time-stamp counter and TSC_AUX only.
    unsafe {
        asm!("rdtscp", out("eax") lo, out("edx") hi, out("ecx") aux,
             options(nomem, nostack, preserves_flags))
    };
    ((u64::from(hi) << 32) | u64::from(lo), aux)
}
