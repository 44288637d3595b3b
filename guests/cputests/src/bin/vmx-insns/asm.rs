//! The ring-3 snippets of vmx-insns: one VMX instruction each, then INT 0x80 back to ring 0
//! (reached only if the instruction did not fault). They sit on their own pages, which the
//! program maps as user code.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.vmx_insns_user, "ax"
    .p2align 12
    .global vmx_user_start
vmx_user_start:
    .global u_vmread
u_vmread:
    vmread rax, rbx
    int 0x80
    .global u_vmwrite
u_vmwrite:
    vmwrite rbx, rax
    int 0x80
    .global u_vmptrst
u_vmptrst:
    vmptrst [rdi]
    int 0x80
    .global u_vmptrld
u_vmptrld:
    vmptrld [rdi]
    int 0x80
    .global u_vmclear
u_vmclear:
    vmclear [rdi]
    int 0x80
    .global u_vmxon
u_vmxon:
    vmxon [rdi]
    int 0x80
    .global u_vmxoff
u_vmxoff:
    vmxoff
    int 0x80
    .global u_vmcall
u_vmcall:
    vmcall
    int 0x80
    .global u_vmlaunch
u_vmlaunch:
    vmlaunch
    int 0x80
    .global u_vmresume
u_vmresume:
    vmresume
    int 0x80
    .global u_invept
u_invept:
    mov eax, 2
    invept rax, [rdi]
    int 0x80
    .global u_invvpid
u_invvpid:
    mov eax, 2
    invvpid rax, [rdi]
    int 0x80
    .p2align 12
    .global vmx_user_end
vmx_user_end:

    .section .text
"#
);

unsafe extern "C" {
    pub static vmx_user_start: u8;
    pub static vmx_user_end: u8;
    pub static u_vmread: u8;
    pub static u_vmwrite: u8;
    pub static u_vmptrst: u8;
    pub static u_vmptrld: u8;
    pub static u_vmclear: u8;
    pub static u_vmxon: u8;
    pub static u_vmxoff: u8;
    pub static u_vmcall: u8;
    pub static u_vmlaunch: u8;
    pub static u_vmresume: u8;
    pub static u_invept: u8;
    pub static u_invvpid: u8;
}

/// Reloads DS and ES with `selector` (a return to ring 3 leaves them null).
pub fn load_data_segments(selector: u16) {
    // SAFETY: the caller passes the ring-0 data selector of the live GDT.
    unsafe {
        core::arch::asm!("mov ds, {0:x}", "mov es, {0:x}", in(reg) selector,
                         options(nostack, preserves_flags))
    };
}
