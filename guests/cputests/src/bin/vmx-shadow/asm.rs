//! The guests of vmx-shadow: VMREAD and VMWRITE in non-root operation, with results and
//! RFLAGS stored in [`OUT`].

use core::arch::global_asm;
use core::sync::atomic::AtomicU64;

/// What the guests store.
pub static OUT: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

global_asm!(
    r#"
    .section .text.vmx_shadow_guests, "ax"

    // OUT[0] = VMREAD GUEST_RIP (read bit clear: from the shadow VMCS);
    // VMWRITE GUEST_CS_SELECTOR = 44H (write bit clear: to the shadow VMCS);
    // OUT[1] = VMREAD GUEST_CS_SELECTOR;
    // OUT[2] = VMREAD GUEST_RSP (read bit set: exit 23, the host supplies the value);
    // VMWRITE GUEST_RSP (write bit set: exit 25);
    // VMREAD with bits 63:15 of the encoding set (exit 23);
    // OUT[3] = RFLAGS after VMREAD of an unsupported field (read bit clear: VMfailValid);
    // OUT[4] = RFLAGS after VMWRITE of the read-only exit-reason field (VMfailValid).
    .global g_shadow
g_shadow:
    push rbx
    mov rax, {guest_rip}
    vmread rbx, rax
    mov [rip + {out}], rbx
    mov rax, {guest_cs}
    mov rbx, 0x44
    vmwrite rax, rbx
    xor ebx, ebx
    vmread rbx, rax
    mov [rip + {out} + 8], rbx
    mov rax, {guest_rsp}
    xor ebx, ebx
    vmread rbx, rax
    mov [rip + {out} + 16], rbx
    vmwrite rax, rbx
    mov rax, {guest_rip} + (1 << 32)
    vmread rbx, rax
    mov rax, {unsupported}
    vmread rbx, rax
    pushfq
    pop rax
    mov [rip + {out} + 24], rax
    mov rax, {exit_reason}
    vmwrite rax, rbx
    pushfq
    pop rax
    mov [rip + {out} + 32], rax
    pop rbx
    ret

    // OUT[0] = RFLAGS after VMREAD GUEST_RIP (read bit clear).
    .global g_vmread_flags
g_vmread_flags:
    push rbx
    mov rax, {guest_rip}
    vmread rbx, rax
    pushfq
    pop rax
    mov [rip + {out}], rax
    pop rbx
    ret

    .section .text
"#,
    out = sym OUT,
    guest_rip = const cputests::vmx::fields::GUEST_RIP,
    guest_rsp = const cputests::vmx::fields::GUEST_RSP,
    guest_cs = const cputests::vmx::fields::GUEST_CS_SELECTOR,
    unsupported = const UNSUPPORTED,
    exit_reason = const cputests::vmx::fields::EXIT_REASON,
);

/// A natural-width guest-state encoding with index 511: no processor has that many fields
/// of one kind (checked against IA32_VMX_VMCS_ENUM by the program).
pub const UNSUPPORTED: u32 = 0x6800 | 511 << 1;

unsafe extern "C" {
    pub fn g_shadow(arg: u64);
    pub fn g_vmread_flags(arg: u64);
}
