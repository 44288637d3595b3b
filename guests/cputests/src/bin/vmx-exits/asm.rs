//! The guests of vmx-exits: short instruction sequences, each a C-ABI function the VMX
//! library's trampoline calls in non-root operation, with a global label on the instructions
//! whose guest RIP the program checks. Results the guest computes go to [`OUT`].

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// What the guests store: registers after an emulated instruction, values they read.
pub static OUT: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

global_asm!(
    r#"
    .section .text.vmx_exits_guests, "ax"
    .p2align 4

    // CPUID leaf RDI with RFLAGS = 403H (CF, DF) and RSP copied to R12; stores EAX..EDX.
    .global g_cpuid
g_cpuid:
    push rbx
    push r12
    mov r12, rsp
    mov eax, edi
    xor ecx, ecx
    push 0x403
    popfq
    .global g_cpuid_at
g_cpuid_at:
    cpuid
    cld
    mov [rip + {out}], rax
    mov [rip + {out} + 8], rbx
    mov [rip + {out} + 16], rcx
    mov [rip + {out} + 24], rdx
    pop r12
    pop rbx
    ret

    .global g_hlt
g_hlt:
    hlt
    .global g_hlt_after
g_hlt_after:
    ret

    .global g_invlpg
g_invlpg:
    invlpg [rdi]
    ret

    .global g_rdtsc
g_rdtsc:
    rdtsc
    ret

    .global g_rdtscp
g_rdtscp:
    rdtscp
    ret

    .global g_rdpmc
g_rdpmc:
    xor ecx, ecx
    rdpmc
    ret

    // VMCALL with RAX = RDI.
    .global g_vmcall
g_vmcall:
    mov rax, rdi
    vmcall
    ret

    // Every VMX instruction: each one exits in non-root operation (SDM Vol. 3C §26.1.2).
    .global g_vmx
g_vmx:
    sub rsp, 16
    mov qword ptr [rsp], 0
    vmxon [rsp]
    vmclear [rsp]
    vmptrld [rsp]
    vmptrst [rsp]
    vmread rax, rbx
    vmwrite rbx, rax
    vmlaunch
    vmresume
    invept rax, [rsp]
    invvpid rax, [rsp]
    vmxoff
    add rsp, 16
    ret

    .global g_mov_cr3
g_mov_cr3:
    mov rax, cr3
    mov cr3, rax
    ret

    .global g_read_cr3
g_read_cr3:
    mov rcx, cr3
    ret

    // CR0 with CR0.TS owned by the host: read (TS from the shadow), write back (no exit),
    // write with TS flipped (exit).
    .global g_cr0
g_cr0:
    mov rax, cr0
    mov [rip + {out}], rax
    mov cr0, rax
    mov rdx, rax
    xor rdx, 8
    mov cr0, rdx
    ret

    // CR4 with VMXE and TSD owned by the host, as for CR0; the exiting write sets TSD.
    .global g_cr4
g_cr4:
    mov rax, cr4
    mov [rip + {out}], rax
    mov cr4, rax
    mov rdx, rax
    or rdx, 4
    mov cr4, rdx
    ret

    .global g_cr8
g_cr8:
    mov eax, 5
    mov cr8, rax
    mov rbx, cr8
    ret

    .global g_dr
g_dr:
    mov rbx, dr7
    mov dr0, rax
    ret

    .global g_io
g_io:
    mov dx, 0x1234
    in eax, dx
    out 0x80, al
    ret

    // Port 0x80 (no bitmap bit), a word at 0x1233 (covers 0x1234, bit set in A), a byte at
    // 0x9000 (bit set in B).
    .global g_io_bitmap
g_io_bitmap:
    mov dx, 0x80
    in al, dx
    mov dx, 0x1233
    in ax, dx
    mov dx, 0x9000
    out dx, al
    ret

    .global g_msr
g_msr:
    mov ecx, 0x175
    rdmsr
    mov ecx, 0x174
    rdmsr
    mov [rip + {out}], rax
    mov ecx, 0x174
    xor eax, eax
    xor edx, edx
    wrmsr
    mov ecx, 0xC0000103
    rdmsr
    mov ecx, 0xC0000103
    wrmsr
    mov ecx, 0xC0000102
    rdmsr
    mov ecx, 0x2000
    rdmsr
    ret

    // PAUSE, MONITOR, MWAIT, WBINVD, RDRAND RCX, RDSEED RCX (as bytes: the encodings of
    // SDM Vol. 2).
    .global g_misc
g_misc:
    .byte 0xF3, 0x90
    mov rax, rsp
    xor ecx, ecx
    xor edx, edx
    .byte 0x0F, 0x01, 0xC8
    xor eax, eax
    .byte 0x0F, 0x01, 0xC9
    .byte 0x0F, 0x09
    .byte 0x48, 0x0F, 0xC7, 0xF1
    .byte 0x48, 0x0F, 0xC7, 0xF9
    ret

    .global g_desc
g_desc:
    sub rsp, 32
    sgdt [rsp]
    sidt [rsp + 16]
    lgdt [rsp]
    lidt [rsp + 16]
    add rsp, 32
    sldt ax
    lldt ax
    str ax
    ltr ax
    ret

    .global g_ud
g_ud:
    .global g_ud_at
g_ud_at:
    ud2
    ret

    .global g_int3
g_int3:
    .global g_int3_at
g_int3_at:
    int3
    ret

    .global g_spin
g_spin:
    jmp g_spin

    // STI, then two NOPs: the interrupt window opens after the first NOP (blocking by STI).
    .global g_sti
g_sti:
    sti
    .global g_sti_shadow
g_sti_shadow:
    nop
    .global g_sti_open
g_sti_open:
    nop
    cli
    ret

    // WRMSR IA32_TSC_AUX = 0x77 (no exit: MSR bitmaps all clear), then return.
    .global g_tsc_aux
g_tsc_aux:
    mov ecx, 0xC0000103
    mov eax, 0x77
    xor edx, edx
    wrmsr
    ret

    // An NMI to all including self through the x2APIC ICR (MSR 830H: delivery mode NMI = 4
    // in bits 10:8, shorthand 2 in bits 19:18).
    .global g_nmi_self
g_nmi_self:
    mov ecx, 0x830
    mov eax, 0x80400
    xor edx, edx
    wrmsr
    .global g_nmi_after
g_nmi_after:
    nop
    ret

    // CLTS, then LMSW of CR0's low word with TS cleared.
    .global g_clts_lmsw
g_clts_lmsw:
    clts
    mov rax, cr0
    and eax, 0xFFF7
    lmsw ax
    ret

    // INVPCID type 2 (all contexts, globals included) with a zeroed descriptor at [RSP].
    .global g_invpcid
g_invpcid:
    sub rsp, 16
    mov qword ptr [rsp], 0
    mov qword ptr [rsp + 8], 0
    mov eax, 2
    invpcid rax, [rsp]
    add rsp, 16
    ret

    // VMCALL as a probe body.
    .global g_vmcall_body
g_vmcall_body:
    mov rax, 1
    vmcall
    ret

    .section .text
"#,
    out = sym OUT,
);

unsafe extern "C" {
    pub fn g_cpuid(arg: u64);
    pub static g_cpuid_at: u8;
    pub fn g_hlt(arg: u64);
    pub static g_hlt_after: u8;
    pub fn g_invlpg(arg: u64);
    pub fn g_rdtsc(arg: u64);
    pub fn g_rdtscp(arg: u64);
    pub fn g_rdpmc(arg: u64);
    pub fn g_vmcall(arg: u64);
    pub fn g_vmx(arg: u64);
    pub fn g_mov_cr3(arg: u64);
    pub fn g_read_cr3(arg: u64);
    pub fn g_cr0(arg: u64);
    pub fn g_cr4(arg: u64);
    pub fn g_cr8(arg: u64);
    pub fn g_dr(arg: u64);
    pub fn g_io(arg: u64);
    pub fn g_io_bitmap(arg: u64);
    pub fn g_msr(arg: u64);
    pub fn g_misc(arg: u64);
    pub fn g_desc(arg: u64);
    pub fn g_ud(arg: u64);
    pub static g_ud_at: u8;
    pub fn g_int3(arg: u64);
    pub static g_int3_at: u8;
    pub fn g_spin(arg: u64);
    pub fn g_sti(arg: u64);
    pub static g_sti_open: u8;
    pub fn g_tsc_aux(arg: u64);
    pub fn g_vmcall_body(arg: u64);
    pub fn g_nmi_self(arg: u64);
    pub fn g_clts_lmsw(arg: u64);
    pub fn g_invpcid(arg: u64);
    pub static g_nmi_after: u8;
}
