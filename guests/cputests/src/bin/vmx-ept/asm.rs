//! The guests of vmx-ept: reads, writes and calls through a linear address, with a VMCALL
//! between steps where the host changes a translation, and a real-mode snippet for the
//! unrestricted guest.

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// What the guests store.
pub static OUT: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

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

    // OUT[0] = [RDI]; VMCALL (RAX = 1); OUT[1] = [RDI]; VMCALL (RAX = 2); OUT[2] = [RDI].
    .global g_read3
g_read3:
    mov rax, [rdi]
    mov [rip + {out}], rax
    mov eax, 1
    vmcall
    mov rax, [rdi]
    mov [rip + {out} + 8], rax
    mov eax, 2
    vmcall
    mov rax, [rdi]
    mov [rip + {out} + 16], rax
    ret

    .section .text
"#,
    out = sym OUT,
);

unsafe extern "C" {
    pub fn g_read(arg: u64);
    pub fn g_write(arg: u64);
    pub fn g_call(arg: u64);
    pub fn g_read3(arg: u64);
}
